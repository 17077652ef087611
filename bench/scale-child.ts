/**
 * One measurement of the real-scale benchmark (bench/scale.bench.ts), run in its own process so that its
 * resident-set high-water mark belongs to this configuration alone:
 *
 *   node --import tsx bench/scale-child.ts '<json task>'
 *
 * Tasks (all on a checkpoint directory `dir`, float or 4-bit):
 *   - train:    MoKA (all linear projections) forward + loss + adapter gradients of one micro-batch
 *               `batch` × `seq`, `runs` timed after one warm-up run;
 *   - score:    scoreTokens on `batch` requests of `seq` tokens (8 scored), timed after a warm-up;
 *   - generate: prefill of a `seq`-token prompt, then greedy decode steps: one warm-up, `tokens` timed;
 *   - compare:  the same task on two checkpoints (`dir`, `other`) in one process, interleaved rounds, so the
 *               time ratio is not skewed by load from elsewhere (peak RSS is then meaningless);
 *   - resume:   runTraining (MoKA, micro-batch 2 × 128, checkpoint every step) stopped after `steps` steps,
 *               then run again: it resumes from that checkpoint and trains step `steps + 1`.
 * Prints one JSON line: peakRssMB (process.resourceUsage().maxRSS) and the task's timings.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAdapterConfig } from '../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../lib/adapters/adapter-runtime.ts';
import { LlamaModel } from '../lib/model/llama-model.ts';
import { scoreTokens } from '../lib/model/scoring.ts';
import { openFrozenBase, type FrozenBase } from '../lib/quant/frozen-base.ts';
import { createLlamaStepProgram } from '../lib/train/llama-step-program.ts';
import { runTraining } from '../lib/train/run-training.ts';
import { parseTrainConfig } from '../lib/train/train-config.ts';
import type { TokenBatch } from '../lib/train/step-program.ts';

export interface ScaleTask {
  task: 'train' | 'score' | 'generate' | 'compare' | 'resume';
  dir: string;
  other?: string;
  inner?: 'train' | 'score' | 'generate';
  batch?: number;
  seq?: number;
  runs?: number;
  tokens?: number;
  steps?: number;
}

const peakRssMB = () => Math.round(process.resourceUsage().maxRSS / 1024);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Token ids below 500 (the tiny tokenizer's range, valid in every vocabulary here). */
const ids = (n: number, salt: number) =>
  Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729) % 500);

interface Runner {
  /** One timed unit: a micro-batch, a scored batch, or one decode step. Returns milliseconds. */
  once(): Promise<number>;
  tokensPerUnit: number;
  close(): Promise<void>;
}

async function trainRunner(base: FrozenBase, batch: number, seq: number): Promise<Runner> {
  const runtime = createAdapterRuntime(
    base.config,
    parseAdapterConfig({ type: 'moka', targetModules: 'all-linear' }),
    { seed: 1 },
  );
  const program = createLlamaStepProgram({
    config: base.config,
    weights: base.weights,
    ...(base.base ? { base: base.base } : {}),
    adapter: runtime,
  });
  const params = new Map(program.trainables.map((t) => [t.name, t.init]));
  const n = batch * seq;
  const tokenBatch: TokenBatch = {
    inputIds: BigInt64Array.from(ids(n, 1), BigInt),
    labels: BigInt64Array.from(ids(n, 2), BigInt),
    attentionMask: new Uint8Array(n).fill(1),
    batchSize: batch,
    seqLen: seq,
  };
  return {
    tokensPerUnit: n,
    async once() {
      const t0 = performance.now();
      await program.lossAndGrads(tokenBatch, params);
      return performance.now() - t0;
    },
    close: () => program.release(),
  };
}

function modelOf(base: FrozenBase): LlamaModel {
  return LlamaModel.fromParts(base.checkpoint, base.weights, base.base ? { hooks: { base: base.base } } : {});
}

async function scoreRunner(base: FrozenBase, batch: number, seq: number): Promise<Runner> {
  const model = modelOf(base);
  const requests = Array.from({ length: batch }, (_, r) => ({
    context: ids(seq - 8, r),
    continuation: ids(8, r + 100),
  }));
  return {
    tokensPerUnit: batch * (seq - 1),
    async once() {
      const t0 = performance.now();
      await scoreTokens(model, requests, { batchSize: batch });
      return performance.now() - t0;
    },
    close: async () => {
      // The checkpoint belongs to the base: release the sessions only.
      for (const s of sessionsOf(model)) await s.release();
    },
  };
}

/** The model's ORT sessions (LlamaModel.close would also close the base's checkpoint). */
function sessionsOf(model: LlamaModel): { release(): Promise<void> }[] {
  const m = model as unknown as {
    sessions: Map<unknown, { release(): Promise<void> }>;
    decodeSessions: Map<unknown, { release(): Promise<void> }>;
  };
  return [...m.sessions.values(), ...m.decodeSessions.values()];
}

async function generateRunner(
  base: FrozenBase,
  seq: number,
  tokens: number,
): Promise<Runner & { prefillMs: number; generated: number[] }> {
  const model = modelOf(base);
  const cache = model.newCache(seq + tokens + 1);
  const t0 = performance.now();
  let logits = await model.prefill(ids(seq, 3), cache);
  const prefillMs = performance.now() - t0;
  const generated: number[] = [];
  const argmax = (l: Float32Array) => l.reduce((best, v, i) => (v > l[best]! ? i : best), 0);
  return {
    prefillMs,
    generated,
    tokensPerUnit: 1,
    async once() {
      const next = argmax(logits);
      generated.push(next);
      if (cache.length >= cache.capacity) cache.length = seq; // keep decoding at the same positions
      const t = performance.now();
      logits = await model.decodeStep(next, cache);
      return performance.now() - t;
    },
    close: async () => {
      for (const s of sessionsOf(model)) await s.release();
    },
  };
}

async function runner(kind: 'train' | 'score' | 'generate', base: FrozenBase, t: ScaleTask): Promise<Runner> {
  if (kind === 'train') return trainRunner(base, t.batch ?? 2, t.seq ?? 128);
  if (kind === 'score') return scoreRunner(base, t.batch ?? 4, t.seq ?? 128);
  return generateRunner(base, t.seq ?? 16, t.tokens ?? 8);
}

async function single(t: ScaleTask): Promise<Record<string, unknown>> {
  const base = await openFrozenBase(t.dir);
  try {
    const kind = t.task as 'train' | 'score' | 'generate';
    const r = await runner(kind, base, t);
    const runs = kind === 'generate' ? (t.tokens ?? 8) : (t.runs ?? 2);
    const warm = await r.once(); // compiles the session (the decode session for generation)
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await r.once());
    const ms = median(times);
    const extra =
      kind === 'generate'
        ? {
            prefillMs: (r as Awaited<ReturnType<typeof generateRunner>>).prefillMs,
            generated: (r as Awaited<ReturnType<typeof generateRunner>>).generated,
          }
        : { warmupMs: warm };
    await r.close();
    return { ms, tokensPerSecond: (r.tokensPerUnit * 1000) / ms, times, ...extra, peakRssMB: peakRssMB() };
  } finally {
    await base.close();
  }
}

async function compare(t: ScaleTask): Promise<Record<string, unknown>> {
  const kind = t.inner!;
  const bases = [await openFrozenBase(t.dir), await openFrozenBase(t.other!)];
  try {
    const runners = [await runner(kind, bases[0]!, t), await runner(kind, bases[1]!, t)];
    for (const r of runners) await r.once(); // warm-up: compiles the sessions
    const times: number[][] = [[], []];
    for (let round = 0; round < (t.runs ?? 3); round++) {
      for (let j = 0; j < 2; j++) {
        // Generation: a few decode steps per round, so both models see the same load.
        const units = kind === 'generate' ? 3 : 1;
        for (let u = 0; u < units; u++) times[j]!.push(await runners[j]!.once());
      }
    }
    for (const r of runners) await r.close();
    const [a, b] = times.map(median) as [number, number];
    return { ms: a, otherMs: b, ratio: a / b, times };
  } finally {
    for (const b of bases) await b.close();
  }
}

async function resume(t: ScaleTask): Promise<Record<string, unknown>> {
  const work = mkdtempSync(join(tmpdir(), 'moka-scale-resume-'));
  try {
    // Text records long enough to fill 128 tokens of the tiny byte-level tokenizer.
    const records = Array.from({ length: 16 }, (_, i) =>
      JSON.stringify({ text: `record ${i}: ` + 'the quick brown fox jumps over the lazy dog. '.repeat(8) }),
    );
    const data = join(work, 'train.jsonl');
    writeFileSync(data, records.join('\n') + '\n');
    const steps = t.steps ?? 2;
    const training = (maxSteps: number) =>
      parseTrainConfig({
        maxSteps,
        microBatchSize: 2,
        maxLength: 128,
        evalFraction: 0,
        checkpointEvery: 1,
        learningRate: 1e-3,
      });
    const adapter = parseAdapterConfig({ type: 'moka', targetModules: 'all-linear' });
    const outputDir = join(work, 'run');
    // The run is planned for steps + 1 and stopped after the checkpoint of step `steps` (maxSteps is part of
    // the run's fingerprint, so the resumed run must ask for the same).
    const run = {
      modelDir: t.dir,
      train: [data],
      outputDir,
      training: training(steps + 1),
      adapter,
      warn: () => undefined,
      handleSignals: false,
    };
    const stop = new AbortController();
    const t0 = performance.now();
    const first = await runTraining({
      ...run,
      stopSignal: stop.signal,
      checkpointHooks: { afterFile: (step) => void (step >= steps && stop.abort()) },
    });
    const t1 = performance.now();
    const second = await runTraining({ ...run, resume: true });
    const t2 = performance.now();
    return {
      steps: first.step,
      resumedFrom: second.resumedFrom,
      finalStep: second.step,
      msFirstRun: t1 - t0,
      msResumedRun: t2 - t1,
      peakRssMB: peakRssMB(),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const task = JSON.parse(process.argv[2]!) as ScaleTask;
const result =
  task.task === 'compare'
    ? await compare(task)
    : task.task === 'resume'
      ? await resume(task)
      : await single(task);
process.stdout.write(`${JSON.stringify({ ...task, ...result })}\n`);
