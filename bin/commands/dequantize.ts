/** `moka dequantize`: a 4-bit checkpoint (NF4 or int4) → a plain 16/32-bit Hugging Face checkpoint. */
import type { Command } from 'commander';
import { dequantizeCheckpoint } from '../../lib/quant/dequantize-checkpoint.ts';
import { createPhaseProgress } from '../../lib/train/progress.ts';
import { parseStorageDtype } from './cli-helpers.ts';

interface DequantizeCliOptions {
  model: string;
  out: string;
  dtype?: string;
  force?: boolean;
  json?: boolean;
}

export function registerDequantize(program: Command): void {
  program
    .command('dequantize')
    .description(
      'turn a 4-bit checkpoint back into a 16/32-bit Hugging Face checkpoint (the weights it computes with)',
    )
    .requiredOption(
      '--model <dir>',
      'the quantized model directory (moka quantize output or a bitsandbytes NF4 model)',
    )
    .requiredOption(
      '--out <dir>',
      'output directory (created atomically; must be new or empty unless --force)',
    )
    .option('--dtype <dtype>', 'f32, f16 or bf16 (default: the dtype the weights had before quantization)')
    .option('--force', 'replace whatever the output directory holds')
    .option('--json', 'print the result as JSON')
    .action(async (opts: DequantizeCliOptions) => {
      const dtype = opts.dtype === undefined ? undefined : parseStorageDtype(opts.dtype);
      const reporter = createPhaseProgress('dequantize');
      let result;
      try {
        result = await dequantizeCheckpoint({
          modelDir: opts.model,
          outDir: opts.out,
          dtype,
          force: opts.force ?? false,
          onProgress: (e) => reporter.update('write', e.index, e.count, e.tensor),
        });
      } finally {
        reporter.stop();
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `dequantized ${result.dequantizedWeights} ${result.format} weights (${result.tensors} tensors, ` +
          `${result.dtype}) → ${result.dir} in ${result.seconds.toFixed(1)} s\n`,
      );
    });
}
