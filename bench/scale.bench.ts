/**
 * Real scale (`npm run bench -- --only scale`; a plain `npm run bench` skips it: it generates ~20 GB of
 * checkpoints and runs for an hour or more on a 2-core machine): LLaMA-2-7B-shaped checkpoints
 * (hidden 4096, MLP 11008, 32 heads, vocab 32000) with 1, 2, 4 and 32 layers and LLaMA-3-8B-shaped ones
 * (MLP 14336, 8 kv heads, vocab 128256) with 1 and 2 layers, random bf16 weights, quantized to NF4 with double
 * quantization (block 64) — plus float and int4 versions of the 1-layer 7B for the speed ratios.
 *
 * Every configuration runs in its own process (bench/scale-child.ts), so its peak RSS is its own:
 *   - MoKA training micro-batch (forward, loss, adapter gradients) at 2 × 128 and 1 × 512 tokens;
 *   - scoring a batch of 4 × 128 tokens; greedy generation per token after a 16-token prompt;
 *   - per-layer slopes of peak RSS and time (least squares over 1, 2, 4 layers);
 *   - ratios measured in one process with interleaved rounds: NF4 vs float (training, scoring), NF4 vs int4
 *     (generation);
 *   - the 32-layer model: 2 training steps with checkpoints, resumed for a third (runTraining), a scored
 *     batch and 8 generated tokens.
 *
 * Checkpoints go to $MOKA_SCALE_DIR (default bench/out/scale, git-ignored) and are reused when present.
 * MOKA_SCALE_LAYERS=1,2,4 limits the 7B layer counts (e.g. to skip the 32-layer run); MOKA_SCALE_PARTS=small,ratios,
 * llama3,full picks parts (default all), MOKA_SCALE_TASKS=train_2x128,train_1x512,score_4x128,generate the tasks
 * of the `small` part. Entries not produced again are kept from the previous results.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeTinyCheckpoint } from '../lib/model/tiny-checkpoint.ts';
import { quantizeCheckpoint } from '../lib/quant/quantize-checkpoint.ts';
import { round, type BenchEntry, type Suite } from './harness.ts';
import type { ScaleTask } from './scale-child.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIR = process.env.MOKA_SCALE_DIR ?? join(ROOT, 'bench', 'out', 'scale');

type Shape = 'llama2' | 'llama3';

function shapeOptions(shape: Shape) {
  return shape === 'llama3'
    ? {
        vocabSize: 128256,
        intermediateSize: 14336,
        numKvHeads: 8,
        ropeTheta: 500000,
        maxPositionEmbeddings: 8192,
      }
    : {
        vocabSize: 32000,
        intermediateSize: 11008,
        numKvHeads: 32,
        ropeTheta: 10000,
        maxPositionEmbeddings: 4096,
      };
}

/** The checkpoint directory of a shape, layer count and format, generated (streaming, one tensor at a time) if absent. */
async function checkpoint(shape: Shape, layers: number, format: 'bf16' | 'nf4' | 'int4'): Promise<string> {
  const src = join(DIR, `${shape}-${layers}-bf16`);
  if (!existsSync(join(src, 'config.json'))) {
    mkdirSync(DIR, { recursive: true });
    process.stderr.write(`scale: generating ${src} …\n`);
    await writeTinyCheckpoint({
      dir: src,
      seed: 1,
      hiddenSize: 4096,
      numLayers: layers,
      numHeads: 32,
      dtype: 'bfloat16',
      shards: Math.max(1, Math.ceil(layers / 8)),
      force: true,
      maxTensorElements: 2 ** 30, // LLaMA-3's 128256 × 4096 embedding
      ...shapeOptions(shape),
    });
  }
  if (format === 'bf16') return src;
  const out = join(DIR, `${shape}-${layers}-${format}`);
  if (!existsSync(join(out, 'config.json'))) {
    process.stderr.write(`scale: quantizing ${out} …\n`);
    await quantizeCheckpoint({
      modelDir: src,
      outDir: out,
      format,
      blockSize: 64,
      doubleQuant: format === 'nf4',
      force: true,
    });
  }
  return out;
}

/** Runs one task in a child process; returns its JSON line. */
function child(task: ScaleTask): Record<string, number | number[] | string> {
  process.stderr.write(`scale: ${JSON.stringify(task)}\n`);
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'bench', 'scale-child.ts'), JSON.stringify(task)],
    {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 16 * 2 ** 20,
    },
  );
  const line = out.trim().split('\n').pop()!;
  process.stderr.write(`scale:   ${line}\n`);
  return JSON.parse(line);
}

/** Least-squares slope of ys over xs. */
function slope(xs: number[], ys: number[]): number {
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  xs.forEach((x, i) => {
    num += (x - mx) * (ys[i]! - my);
    den += (x - mx) ** 2;
  });
  return num / den;
}

const TASKS: { key: string; task: Omit<ScaleTask, 'dir'>; what: string }[] = [
  {
    key: 'train_2x128',
    task: { task: 'train', batch: 2, seq: 128, runs: 2 },
    what: 'MoKA training micro-batch 2 × 128',
  },
  {
    key: 'train_1x512',
    task: { task: 'train', batch: 1, seq: 512, runs: 2 },
    what: 'MoKA training micro-batch 1 × 512',
  },
  {
    key: 'score_4x128',
    task: { task: 'score', batch: 4, seq: 128, runs: 2 },
    what: 'scoring 4 × 128 tokens',
  },
  {
    key: 'generate',
    task: { task: 'generate', seq: 16, tokens: 6 },
    what: 'greedy generation per token (16-token prompt)',
  },
];

async function run(): Promise<BenchEntry[]> {
  const entries: BenchEntry[] = [];
  const layerList = (process.env.MOKA_SCALE_LAYERS ?? '1,2,4,32').split(',').map(Number);
  const small = layerList.filter((l) => l <= 4);
  const MB = 'MB peak RSS';

  const parts = new Set((process.env.MOKA_SCALE_PARTS ?? 'small,ratios,llama3,full').split(','));
  // Per-layer memory and time on the LLaMA-2-7B shape.
  const byTask = new Map<string, { layers: number; rss: number; ms: number; tps: number }[]>();
  const only = process.env.MOKA_SCALE_TASKS?.split(',');
  const tasks = TASKS.filter((t) => !only || only.includes(t.key));
  for (const layers of parts.has('small') ? small : []) {
    const dir = await checkpoint('llama2', layers, 'nf4');
    for (const t of tasks) {
      const r = child({ ...t.task, dir } as ScaleTask);
      const list = byTask.get(t.key) ?? [];
      list.push({ layers, rss: r.peakRssMB as number, ms: r.ms as number, tps: r.tokensPerSecond as number });
      byTask.set(t.key, list);
      entries.push({
        name: `scale.llama2_7b.nf4.${layers}l.${t.key}.peak_rss`,
        value: r.peakRssMB as number,
        unit: 'MB',
        notes: `${t.what}; LLaMA-2-7B shape, ${layers} layer(s), NF4 + double quant; own process`,
      });
      entries.push({
        name: `scale.llama2_7b.nf4.${layers}l.${t.key}.tokens_per_s`,
        value: round(r.tokensPerSecond as number),
        unit: 'tokens/s',
        notes: `${t.what}; median of the timed runs (${round(r.ms as number)} ms each)`,
      });
    }
  }
  if (parts.has('small') && small.length >= 2) {
    for (const t of tasks) {
      const list = byTask.get(t.key)!;
      const xs = list.map((p) => p.layers);
      const perLayer = [
        ['rss', 'MB/layer', `${MB} over ${xs.join(', ')} layers (packed NF4 layer: 104 MB)`],
        ['ms', 'ms/layer', `the time over ${xs.join(', ')} layers`],
      ] as const;
      for (const [key, unit, over] of perLayer) {
        entries.push({
          name: `scale.llama2_7b.nf4.${t.key}.${key}_per_layer`,
          value: round(
            slope(
              xs,
              list.map((p) => p[key]),
            ),
          ),
          unit,
          notes: `${t.what}: least-squares slope of ${over}`,
        });
      }
    }
  }

  // Ratios in one process (interleaved), 1-layer 7B shape.
  if (parts.has('ratios')) await ratioEntries(entries);
  if (parts.has('llama3')) await llama3Entries(entries);
  if (parts.has('full') && layerList.includes(32)) await fullEntries(entries);
  return entries;
}

async function ratioEntries(entries: BenchEntry[]): Promise<void> {
  const nf4 = await checkpoint('llama2', 1, 'nf4');
  const float = await checkpoint('llama2', 1, 'bf16');
  const int4 = await checkpoint('llama2', 1, 'int4');
  const ratios: [string, Omit<ScaleTask, 'dir'>, string, string][] = [
    [
      'train_2x128_vs_float',
      { task: 'compare', inner: 'train', batch: 2, seq: 128, runs: 3, other: float },
      'float (bf16 checkpoint as float32)',
      'MoKA training micro-batch 2 × 128',
    ],
    [
      'score_4x128_vs_float',
      { task: 'compare', inner: 'score', batch: 4, seq: 128, runs: 3, other: float },
      'float (bf16 checkpoint as float32)',
      'scoring 4 × 128 tokens',
    ],
    [
      'generate_vs_int4',
      { task: 'compare', inner: 'generate', seq: 16, runs: 3, other: int4 },
      'int4 (MatMulNBits)',
      'greedy generation per token',
    ],
  ];
  for (const [key, task, other, what] of ratios) {
    const r = child({ ...task, dir: nf4 } as ScaleTask);
    entries.push(ratioEntry(`scale.llama2_7b.1l.nf4_time_ratio.${key}`, r, other, `${what}, 1-layer`));
  }
  // On one layer the float head is much of a token's time; four layers weigh the 4-bit products more.
  const r = child({
    task: 'compare',
    inner: 'generate',
    seq: 16,
    runs: 3,
    dir: await checkpoint('llama2', 4, 'nf4'),
    other: await checkpoint('llama2', 4, 'int4'),
  });
  entries.push(
    ratioEntry(
      'scale.llama2_7b.4l.nf4_time_ratio.generate_vs_int4',
      r,
      'int4 (MatMulNBits)',
      'greedy generation per token, 4-layer',
    ),
  );
}

function ratioEntry(name: string, r: Record<string, unknown>, other: string, what: string): BenchEntry {
  return {
    name,
    value: round(r.ratio as number),
    unit: 'x (NF4 time / other time)',
    baseline: other,
    baselineValue: round(r.otherMs as number),
    notes: `${what} LLaMA-2-7B shape; NF4 ${round(r.ms as number)} ms vs ${round(r.otherMs as number)} ms, medians of interleaved rounds in one process (lower is better)`,
  };
}

/** LLaMA-3-8B shape (128k vocabulary, GQA): 1 and 2 layers. */
async function llama3Entries(entries: BenchEntry[]): Promise<void> {
  for (const layers of [1, 2]) {
    const dir = await checkpoint('llama3', layers, 'nf4');
    for (const t of [TASKS[0]!, TASKS[2]!, TASKS[3]!]) {
      const r = child({ ...t.task, dir } as ScaleTask);
      entries.push({
        name: `scale.llama3_8b.nf4.${layers}l.${t.key}.peak_rss`,
        value: r.peakRssMB as number,
        unit: 'MB',
        notes: `${t.what}; LLaMA-3-8B shape, ${layers} layer(s), NF4 + double quant; ${round(r.tokensPerSecond as number)} tokens/s`,
      });
    }
  }
}

/** The full 32-layer LLaMA-2-7B: training with a resume, scoring, generation. */
async function fullEntries(entries: BenchEntry[]): Promise<void> {
  {
    const dir = await checkpoint('llama2', 32, 'nf4');
    // The 13 GB bf16 source is not needed once quantized.
    rmSync(join(DIR, 'llama2-32-bf16'), { recursive: true, force: true });
    const r = child({ task: 'resume', dir, steps: 2 });
    entries.push({
      name: 'scale.llama2_7b.nf4.32l.train_resume.peak_rss',
      value: r.peakRssMB as number,
      unit: 'MB',
      notes: `runTraining MoKA 2 × 128: ${r.steps} steps (${round((r.msFirstRun as number) / 1000)} s with session creation), resumed from step ${r.resumedFrom} to ${r.finalStep} (${round((r.msResumedRun as number) / 1000)} s)`,
    });
    for (const t of [TASKS[2]!, TASKS[3]!]) {
      const q = child({
        ...t.task,
        dir,
        ...(t.key === 'generate' ? { tokens: 8 } : { runs: 1 }),
      } as ScaleTask);
      entries.push({
        name: `scale.llama2_7b.nf4.32l.${t.key}.peak_rss`,
        value: q.peakRssMB as number,
        unit: 'MB',
        notes: `${t.what}, full 32-layer LLaMA-2-7B NF4; ${round(q.ms as number)} ms (${round(q.tokensPerSecond as number)} tokens/s)`,
      });
    }
  }
}

/** Partial runs (MOKA_SCALE_LAYERS) keep the other configurations' previous results. */
export const scaleSuite: Suite = { name: 'scale', run, onlyWhenAsked: true, mergePrevious: true };
