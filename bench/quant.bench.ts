/**
 * Quantization benchmark (issue: 4-bit quantization): quantizing a checkpoint larger than 1 GB keeps the
 * process's memory high-water mark below 1.5x its largest tensor (as float32) plus a fixed overhead, and the
 * throughput in MB/s of input weights. Each run happens in a child process (bench/quantize-rss.ts).
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../lib/model/checkpoint.ts';
import { numElements } from '../lib/model/dtype-convert.ts';
import { writeTinyCheckpoint } from '../lib/model/tiny-checkpoint.ts';
import { round, type BenchEntry, type Suite } from './harness.ts';

const MiB = 2 ** 20;
const FIXED_OVERHEAD = 64 * MiB;

async function quantizeRss(root: string, src: string, format: 'nf4' | 'int4'): Promise<BenchEntry[]> {
  const ckpt = await openCheckpoint(src);
  const names = ckpt.tensorNames();
  const bytesOnDisk = names.reduce((s, n) => s + ckpt.info(n).byteLength, 0);
  const largest = Math.max(...names.map((n) => 4 * numElements(ckpt.info(n).shape)));
  await ckpt.close();
  const child = fileURLToPath(new URL('./quantize-rss.ts', import.meta.url));
  const out = join(root, `out-${format}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, src, out, format], { encoding: 'utf8' });
  await rm(out, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`quantize-rss failed: ${r.stderr}`);
  const rep = JSON.parse(r.stdout) as { before: number; maxRss: number; ms: number };
  const bound = rep.before + 1.5 * largest + FIXED_OVERHEAD;
  const mib = (x: number) => round(x / MiB);
  const what = format === 'nf4' ? 'NF4 + double quant' : 'int4 asymmetric';
  return [
    {
      name: `quant.${format}.1.07GB_bf16.rss_high_water`,
      value: mib(rep.maxRss),
      unit: 'MiB',
      baseline:
        'bound: RSS before + 1.5 x largest tensor (float32) + 64 MiB; ratio = bound / value (> 1 is within)',
      baselineValue: mib(bound),
      ratio: round(bound / rep.maxRss),
      notes: `${what}, ${(bytesOnDisk / 1e9).toFixed(2)} GB bf16 in 2 shards; largest tensor ${mib(largest)} MiB as float32; RSS before ${mib(rep.before)} MiB`,
    },
    {
      name: `quant.${format}.1.07GB_bf16.throughput`,
      value: round(bytesOnDisk / 1e6 / (rep.ms / 1e3)),
      unit: 'MB/s of input weights',
      notes: `${what}, one thread, whole run (read, quantize, write, per-layer error summary): ${round(rep.ms / 1e3)} s`,
    },
  ];
}

export const quantSuite: Suite = {
  name: 'quant',
  run: async () => {
    const root = await mkdtemp(join(tmpdir(), 'moka-bench-quant-'));
    try {
      const src = join(root, 'src');
      process.stderr.write('bench: writing a 1.07 GB bf16 checkpoint …\n');
      await writeTinyCheckpoint({
        dir: src,
        hiddenSize: 4096,
        intermediateSize: 16384,
        numHeads: 32,
        numKvHeads: 32,
        numLayers: 2,
        dtype: 'bfloat16',
        shards: 2,
      });
      return [...(await quantizeRss(root, src, 'nf4')), ...(await quantizeRss(root, src, 'int4'))];
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
};
