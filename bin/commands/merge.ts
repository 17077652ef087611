/** `moka merge`: write base model + adapter as one full-precision Hugging Face checkpoint. */
import type { Command } from 'commander';
import { mergeCheckpoint } from '../../lib/adapters/merge-checkpoint.ts';
import { parseStorageDtype } from './cli-helpers.ts';

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description(
      'add an adapter to its base model and write a Hugging Face checkpoint (a 4-bit base is dequantized first)',
    )
    .requiredOption('--model <dir>', 'base model directory (float or 4-bit)')
    .requiredOption('--adapter <dir>', 'adapter directory (adapter_config.json + adapter_model.safetensors)')
    .requiredOption('--out <dir>', 'output directory')
    .option('--dtype <dtype>', 'output weights: f32, f16 or bf16', 'f32')
    .option('--force', 'replace a non-empty output directory')
    .action(async (opts: { model: string; adapter: string; out: string; dtype: string; force?: boolean }) => {
      const dtype = parseStorageDtype(opts.dtype);
      const r = await mergeCheckpoint({ ...opts, dtype });
      process.stdout.write(`merged ${r.mergedModules} projections into ${r.tensors} tensors: ${r.out}\n`);
    });
}
