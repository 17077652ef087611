/**
 * Model benchmarks (issue: LLaMA-family models):
 * - forward throughput on a tiny model (4 layers, hidden 256): one batched run of 8 sequences vs the same 8
 *   sequences one at a time;
 * - greedy decoding with the key/value cache vs re-running the whole prefix for every new token;
 * - the resident-set high-water mark while loading checkpoints larger than 1 GB (float32, and bfloat16 converted
 *   on load), measured in a child process, against the bound 1.5 × the largest tensor (as float32) plus a fixed
 *   overhead (the child's RSS before loading + 64 MiB).
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../lib/model/checkpoint.ts';
import { numElements } from '../lib/model/dtype-convert.ts';
import { generateTokens } from '../lib/model/generation.ts';
import { LlamaModel } from '../lib/model/llama-model.ts';
import { writeTinyCheckpoint, type TinyCheckpointOptions } from '../lib/model/tiny-checkpoint.ts';
import { interleavedMedians, round, type BenchEntry, type Suite } from './harness.ts';

const MiB = 2 ** 20;
const FIXED_OVERHEAD = 64 * MiB;
const THROUGHPUT_MODEL: Omit<TinyCheckpointOptions, 'dir'> = {
  seed: 1,
  numLayers: 4,
  hiddenSize: 256,
  intermediateSize: 768,
  numHeads: 4,
  numKvHeads: 2,
};
const SHAPE = '4x256';

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => 1 + ((i * 31 + seed * 97) % 480));

async function forwardThroughput(model: LlamaModel): Promise<BenchEntry> {
  const batch = 8;
  const seq = 128;
  const seqs = Array.from({ length: batch }, (_, b) => ids(seq, b));
  const [tBatched, tOneByOne] = await interleavedMedians(
    () => model.logits(seqs),
    async () => {
      for (const s of seqs) await model.logits([s]);
    },
    15,
  );
  const tokens = batch * seq;
  const batched = tokens / (tBatched / 1e3);
  const oneByOne = tokens / (tOneByOne / 1e3);
  return {
    name: `model.forward.${SHAPE}.batched.tokens_per_s`,
    value: round(batched),
    unit: 'tokens/s',
    baseline: 'the same 8 sequences run one at a time (batch 1)',
    baselineValue: round(oneByOne),
    ratio: round(batched / oneByOne),
    notes:
      `tiny LLaMA ${SHAPE} (4 layers, hidden 256, 4/2 heads, MLP 768, vocab 512), float32, CPU; ${batch} x ${seq} ` +
      'tokens, logits of every position returned. At 128 tokens per sequence the GEMMs are already large enough ' +
      'on CPU, so batching gains little here; it matters for short sequences and on GPU',
  };
}

async function decodeThroughput(model: LlamaModel): Promise<BenchEntry> {
  const prompt = ids(64, 9);
  const newTokens = 64;
  const opts = { maxNewTokens: newTokens, eosIds: [] };
  const [tCache, tFull] = await interleavedMedians(
    () => generateTokens(model, prompt, opts),
    () => generateTokens(model, prompt, { ...opts, useCache: false }),
    5,
  );
  const a = await generateTokens(model, prompt, opts);
  const b = await generateTokens(model, prompt, { ...opts, useCache: false });
  const same = a.tokens.every((t, i) => t === b.tokens[i]);
  return {
    name: `model.decode.${SHAPE}.kv_cache.tokens_per_s`,
    value: round(newTokens / (tCache / 1e3)),
    unit: 'tokens/s',
    baseline: 'the same greedy decoding re-running the whole prefix for every token (no cache)',
    baselineValue: round(newTokens / (tFull / 1e3)),
    ratio: round(tFull / tCache),
    notes: `64-token prompt + ${newTokens} new tokens, batch 1, prefill included; identical tokens: ${same}`,
  };
}

interface RssReport {
  before: number;
  afterLoad: number;
  afterRun: number | null;
  loadMs: number;
  runMs: number | null;
}

async function loadRss(
  root: string,
  label: string,
  opts: Omit<TinyCheckpointOptions, 'dir'>,
): Promise<BenchEntry> {
  const dir = join(root, label);
  process.stderr.write(`bench: writing a ${label} checkpoint …\n`);
  await writeTinyCheckpoint({ dir, ...opts });
  const ckpt = await openCheckpoint(dir);
  const names = ckpt.tensorNames();
  const bytesOnDisk = names.reduce((s, n) => s + ckpt.info(n).byteLength, 0);
  const largest = Math.max(...names.map((n) => 4 * numElements(ckpt.info(n).shape)));
  await ckpt.close();
  const child = fileURLToPath(new URL('./model-load-rss.ts', import.meta.url));
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, dir, '--run'], { encoding: 'utf8' });
  await rm(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`model-load-rss failed: ${r.stderr}`);
  const rep = JSON.parse(r.stdout) as RssReport;
  const bound = rep.before + 1.5 * largest + FIXED_OVERHEAD;
  const mib = (x: number) => round(x / MiB);
  return {
    name: `model.load.${label}.rss_high_water`,
    value: mib(rep.afterLoad),
    unit: 'MiB',
    baseline:
      'bound: RSS before loading + 1.5 x largest tensor (float32) + 64 MiB; ratio = bound / value (> 1 is within)',
    baselineValue: mib(bound),
    ratio: round(bound / rep.afterLoad),
    notes:
      `${(bytesOnDisk / 1e9).toFixed(2)} GB of weights on disk; largest tensor ${mib(largest)} MiB as float32; ` +
      `RSS before loading ${mib(rep.before)} MiB; load ${round(rep.loadMs / 1e3)} s (open, validate, prepare weights, ` +
      `build and emit the graph). Then creating the ORT session and a 4-token forward: high water ` +
      `${mib(rep.afterRun ?? 0)} MiB in ${round((rep.runMs ?? 0) / 1e3)} s (ORT maps the weights, which the run ` +
      'touches: that part scales with the model, not the largest tensor)',
  };
}

export const modelSuite: Suite = {
  name: 'model',
  run: async () => {
    const root = await mkdtemp(join(tmpdir(), 'moka-bench-model-'));
    try {
      await writeTinyCheckpoint({ dir: join(root, 'tiny'), ...THROUGHPUT_MODEL });
      const model = await LlamaModel.load(join(root, 'tiny'));
      const entries = [await forwardThroughput(model), await decodeThroughput(model)];
      await model.close();
      // Wide layers (4096 x 16384 MLP: 256 MiB per float32 tensor) make the bound about tensors, not overhead.
      const wide = { hiddenSize: 4096, intermediateSize: 16384, numHeads: 32, numKvHeads: 32 };
      entries.push(await loadRss(root, 'f32-1.09GB', { ...wide, numLayers: 1, dtype: 'float32' }));
      entries.push(
        await loadRss(root, 'bf16-1.07GB', { ...wide, numLayers: 2, dtype: 'bfloat16', shards: 2 }),
      );
      return entries;
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
};
