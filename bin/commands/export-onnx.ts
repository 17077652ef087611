/** `moka export-onnx`: a model (with its adapter, merged or not) as a standalone ONNX model. */
import type { Command } from 'commander';
import { exportOnnx } from '../../lib/adapters/export-onnx.ts';
import { parseInteger } from './cli-helpers.ts';

export function registerExportOnnx(program: Command): void {
  program
    .command('export-onnx')
    .description(
      'write the model as ONNX for inference with any ONNX Runtime: inputs input_ids, attention_mask [batch, seq] ' +
        'and position_ids [seq]; output logits. Shapes are fixed at export.',
    )
    .requiredOption('--model <dir>', 'base model directory (float or 4-bit)')
    .option('--adapter <dir>', 'include a trained adapter')
    .option('--merged', 'add the adapter into the weights instead of keeping it as a separate branch')
    .requiredOption('--out <file.onnx>', 'output model; large weights go to <name>.weights beside it')
    .option('--batch <n>', 'batch size of the exported model', '1')
    .option('--seq <n>', 'sequence length of the exported model', '128')
    .option(
      '--max-positions <n>',
      'positions the RoPE tables cover (default min(max_position_embeddings, 4096))',
    )
    .option('--force', 'replace an existing --out model (and its weights file)')
    .action(
      async (opts: {
        model: string;
        adapter?: string;
        merged?: boolean;
        out: string;
        batch: string;
        seq: string;
        maxPositions?: string;
        force?: boolean;
      }) => {
        const r = await exportOnnx({
          model: opts.model,
          adapter: opts.adapter,
          merged: opts.merged,
          out: opts.out,
          batch: parseInteger(opts.batch, '--batch', 1),
          seq: parseInteger(opts.seq, '--seq', 1),
          maxPositions: opts.maxPositions ? parseInteger(opts.maxPositions, '--max-positions', 1) : undefined,
          force: opts.force ?? false,
        });
        process.stdout.write(`wrote ${r.files.join(', ')} (${r.nodes} nodes)\n`);
      },
    );
}
