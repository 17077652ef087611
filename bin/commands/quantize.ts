/**
 * `moka quantize`: a Hugging Face LLaMA checkpoint → a 4-bit one (NF4 in the transformers/bitsandbytes layout,
 * or int4 in ONNX Runtime's MatMulNBits layout), with per-layer reconstruction errors in quantize-summary.json.
 * Progress is a bar on a terminal and JSON lines on stderr otherwise; the result goes to stdout.
 */
import type { Command } from 'commander';
import { UserError } from '../../lib/errors.ts';
import { quantizeCheckpoint, type QuantizeProgress } from '../../lib/quant/quantize-checkpoint.ts';
import { createPhaseProgress } from '../../lib/train/progress.ts';
import { parseInteger } from './cli-helpers.ts';

interface QuantizeCliOptions {
  model: string;
  out: string;
  format: string;
  blockSize?: string;
  doubleQuant?: boolean;
  symmetric?: boolean;
  quantizeLmHead?: boolean;
  maxShardSize?: string;
  force?: boolean;
  json?: boolean;
}

/** "5GB", "500MB", "2GiB" or a byte count → bytes. */
export function parseByteSize(value: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$/i.exec(value);
  const units: Record<string, number> = {
    b: 1,
    kb: 1e3,
    mb: 1e6,
    gb: 1e9,
    kib: 1024,
    mib: 1024 ** 2,
    gib: 1024 ** 3,
  };
  const bytes = m ? Math.floor(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]!) : NaN;
  if (!(bytes > 0)) throw new UserError(`${flag} must be a size like 5GB or 500MB, got "${value}"`);
  return bytes;
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description(
      'quantize a Hugging Face LLaMA checkpoint to 4 bits (NF4 for transformers/bitsandbytes, or int4)',
    )
    .requiredOption('--model <dir>', 'the 16/32-bit Hugging Face model directory')
    .requiredOption(
      '--out <dir>',
      'output directory (created atomically; must be new, empty or a quantization of the same model)',
    )
    .option('--format <format>', 'nf4 (bitsandbytes layout) or int4 (ONNX Runtime MatMulNBits layout)', 'nf4')
    .option('--block-size <n>', 'values per scale: nf4 32..4096, int4 16..256, powers of two (default 64)')
    .option('--double-quant', 'nf4: store the block scales in 8 bits too (QLoRA double quantization)')
    .option('--symmetric', 'int4: symmetric blocks without zero points (default asymmetric)')
    .option(
      '--quantize-lm-head',
      'quantize the output head too (transformers keeps it in 16 bits by default)',
    )
    .option('--max-shard-size <size>', 'split the weights into shards of at most this size', '5GB')
    .option('--force', 'replace whatever the output directory holds')
    .option('--json', 'print the summary as JSON')
    .action(async (opts: QuantizeCliOptions) => {
      if (opts.format !== 'nf4' && opts.format !== 'int4') {
        throw new UserError(`--format must be nf4 or int4, got "${opts.format}"`);
      }
      const reporter = createPhaseProgress('quantize');
      const onProgress = (e: QuantizeProgress) => {
        if (e.phase === 'quantize') {
          reporter.update('quantize', e.bytesDone, e.bytesTotal, `${e.index}/${e.count} ${e.tensor}`, {
            tensor: e.tensor,
            relativeError: e.relativeError,
          });
        } else {
          reporter.update('write', e.bytesDone, e.bytesTotal, e.file);
        }
      };
      let summary;
      try {
        summary = await quantizeCheckpoint({
          modelDir: opts.model,
          outDir: opts.out,
          format: opts.format,
          blockSize:
            opts.blockSize === undefined ? undefined : parseInteger(opts.blockSize, '--block-size', 1),
          doubleQuant: opts.doubleQuant ?? false,
          symmetric: opts.symmetric ?? false,
          quantizeLmHead: opts.quantizeLmHead ?? false,
          maxShardBytes: parseByteSize(opts.maxShardSize ?? '5GB', '--max-shard-size'),
          force: opts.force ?? false,
          onProgress,
        });
      } finally {
        reporter.stop();
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      const t = summary.totals;
      const o = summary.options;
      const what =
        summary.format === 'nf4'
          ? `nf4, block ${o.blockSize}${o.doubleQuant ? ', double quant' : ''}`
          : `int4, block ${o.blockSize}, ${o.symmetric ? 'symmetric' : 'asymmetric'}`;
      process.stdout.write(
        `quantized ${t.quantizedWeights} weights (${what}) → ${summary.output.dir}\n` +
          `  relative error ${t.relativeError.toFixed(4)} overall, worst ${t.maxRelativeError.toFixed(4)} ` +
          `(${t.worstLayer})\n` +
          `  ${t.bitsPerQuantizedWeight.toFixed(3)} bits per quantized weight; ${summary.kept.length} tensors kept ` +
          `as they were\n` +
          `  ${summary.timing.seconds.toFixed(1)} s, ${summary.timing.throughputMBps.toFixed(0)} MB/s of input weights\n`,
      );
    });
}
