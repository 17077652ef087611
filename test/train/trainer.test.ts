import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointStore, COMPLETE_MARKER } from '../../lib/train/checkpoints.ts';
import type { StepProgram } from '../../lib/train/step-program.ts';
import { collate, collatePacked } from '../../lib/train/tokenize-batch.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';
import { train } from '../../lib/train/trainer.ts';
import { fixtureRun, tinyData, tinyTokenizer, BASE_CONFIG } from './fixtures/setup.ts';
import { bitIdentical, maxAbsDiff, metricsWithoutTiming } from './helpers.ts';
import { attentionProgram, bigramProgram } from './programs.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-trainer-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let runNo = 0;
const newDir = () => join(root, `run-${runNo++}`);

/** Aborts `controller` once the program has run `calls` micro-batches: a programmatic SIGTERM. */
function stopAfter(calls: number, controller: AbortController) {
  return (p: StepProgram): StepProgram => {
    let n = 0;
    return {
      ...p,
      async lossAndGrads(batch, params) {
        const r = await p.lossAndGrads(batch, params);
        if (++n === calls) controller.abort();
        return r;
      },
    };
  };
}

function stepDirs(dir: string): string[] {
  return readdirSync(join(dir, 'checkpoints')).sort();
}

describe('trainer', () => {
  // The reference run most tests compare against: 30 steps, micro-batch 4 × accumulation 2, cosine schedule.
  const refDir = newDir();
  const reference = fixtureRun({ outputDir: refDir });

  it('lowers the held-out loss well below its starting value, logging every step', async () => {
    const r = await reference;
    expect(r.stoppedBy).toBe('completed');
    expect(r.step).toBe(30);
    const metrics = metricsWithoutTiming(join(refDir, 'metrics.jsonl'));
    const first = metrics[0]!.evalLoss as number;
    expect(metrics[0]).toEqual({ step: 0, epoch: 0, evalLoss: first });
    expect(metrics).toHaveLength(31);
    // Figures (seed 5): eval loss 6.78 at step 0 (ln 512 = 6.24 plus the random init), 3.22 after 30 steps.
    expect(r.lastEvalLoss!).toBeLessThan(0.5 * first);
    const last = metrics.at(-1)!;
    expect(Object.keys(last)).toEqual([
      'step',
      'epoch',
      'loss',
      'lr',
      'gateLr',
      'gradNorm',
      'tokens',
      'inputTokens',
      'gate',
      'evalLoss',
    ]);
    // Step k runs at the multiplier after k − 1 steps (LambdaLR): step 30 of 30, warmup 3 → ½(1 + cos(π · 26/27)).
    expect(last.lr).toBeCloseTo(0.05 * 0.5 * (1 + Math.cos((Math.PI * 26) / 27)), 12);
    expect(metrics[1]!.lr).toBe(0);
    expect(metrics.filter((m) => 'evalLoss' in m).map((m) => m.step)).toEqual([0, 5, 10, 15, 20, 25, 30]);
    // keepCheckpoints 2: only the newest two complete checkpoints remain (the final one included).
    expect(stepDirs(refDir)).toEqual(['step-28', 'step-30']);
  });

  it('is deterministic: the same seed gives bit-identical parameters and loss curves; another seed does not', async () => {
    const again = newDir();
    const r2 = await fixtureRun({ outputDir: again });
    const r1 = await reference;
    expect(bitIdentical(r1.params, r2.params)).toBe(true);
    expect(metricsWithoutTiming(join(again, 'metrics.jsonl'))).toEqual(
      metricsWithoutTiming(join(refDir, 'metrics.jsonl')),
    );
    const other = await fixtureRun({ outputDir: newDir(), config: { seed: 6, maxSteps: 3 } });
    const short = await fixtureRun({ outputDir: newDir(), config: { maxSteps: 3 } });
    expect(bitIdentical(other.params, short.params)).toBe(false);
  });

  it('gradient accumulation over k micro-batches equals one batch k times larger', async () => {
    const cfg = { groupByLength: false, maxGradNorm: 0, evalEvery: 0, maxSteps: 6, checkpointEvery: 100 };
    const dirA = newDir();
    const dirB = newDir();
    const a = await fixtureRun({
      outputDir: dirA,
      config: { ...cfg, microBatchSize: 2, gradientAccumulation: 4 },
    });
    const b = await fixtureRun({
      outputDir: dirB,
      config: { ...cfg, microBatchSize: 8, gradientAccumulation: 1 },
    });
    const ma = metricsWithoutTiming(join(dirA, 'metrics.jsonl')).filter((m) => 'loss' in m);
    const mb = metricsWithoutTiming(join(dirB, 'metrics.jsonl')).filter((m) => 'loss' in m);
    expect(ma.map((m) => m.tokens)).toEqual(mb.map((m) => m.tokens));
    // Float32 sums in a different grouping: agreement to ~1e-6 relative on loss and gradient norm.
    ma.forEach((m, i) => {
      expect(Math.abs((m.loss as number) - (mb[i]!.loss as number))).toBeLessThan(1e-5 * (m.loss as number));
      expect(Math.abs((m.gradNorm as number) - (mb[i]!.gradNorm as number))).toBeLessThan(
        1e-5 * (m.gradNorm as number),
      );
    });
    // After 6 AdamW steps (lr 0.05) the parameters agree far below the step size.
    expect(maxAbsDiff(a.params, b.params)).toBeLessThan(1e-4);
  });

  it('stops early when the held-out loss stops improving', async () => {
    const dir = newDir();
    const r = await fixtureRun({
      outputDir: dir,
      config: { earlyStoppingPatience: 2, earlyStoppingMinDelta: 100, evalEvery: 3 },
    });
    // min delta 100 can never be beaten: evaluations at steps 3 and 6 both count as "no improvement".
    expect(r.stoppedBy).toBe('early-stopping');
    expect(r.step).toBe(6);
    expect(stepDirs(dir).at(-1)).toBe('step-6');
    // A restarted job finds the run finished and does nothing.
    const again = await fixtureRun({
      outputDir: dir,
      config: { earlyStoppingPatience: 2, earlyStoppingMinDelta: 100, evalEvery: 3 },
    });
    expect(again).toMatchObject({ stoppedBy: 'early-stopping', step: 6, resumedFrom: 6 });
  });

  it('resumes exactly after a stop, ignoring an incomplete newest checkpoint and a corrupt one', async () => {
    const dir = newDir();
    const controller = new AbortController();
    // 26 micro-batches = 13 steps; the stop writes step-13 besides the periodic step-8 and step-12.
    const stopped = await fixtureRun({
      outputDir: dir,
      wrap: stopAfter(26, controller),
      stopSignal: controller.signal,
    });
    expect(stopped).toMatchObject({ stoppedBy: 'signal', step: 13, signal: 'abort' });
    expect(stepDirs(dir)).toEqual(['step-12', 'step-13']);
    // Simulate a kill during the write of step-13 (no marker) and a corrupted step-12 → nothing usable…
    rmSync(join(dir, 'checkpoints', 'step-13', COMPLETE_MARKER));
    const adapter = join(dir, 'checkpoints', 'step-12', 'adapter.safetensors');
    const bytes = readFileSync(adapter);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(adapter, bytes);
    const warnings: string[] = [];
    await expect(fixtureRun({ outputDir: dir, warn: (m) => warnings.push(m) })).rejects.toThrow(
      /every complete checkpoint .* failed verification/,
    );
    expect(warnings[0]).toMatch(/step-12: .*checksum differs/);
    // …so restore step-12 and continue: it resumes from 12, not from the incomplete 13.
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(adapter, bytes);
    const resumed = await fixtureRun({ outputDir: dir });
    const ref = await reference;
    expect(resumed).toMatchObject({ stoppedBy: 'completed', step: 30, resumedFrom: 12 });
    expect(bitIdentical(resumed.params, ref.params)).toBe(true);
    expect(metricsWithoutTiming(join(dir, 'metrics.jsonl'))).toEqual(
      metricsWithoutTiming(join(refDir, 'metrics.jsonl')),
    );
  });

  it('refuses checkpoints of another adapter or config and leaves them intact', async () => {
    const dir = newDir();
    await fixtureRun({ outputDir: dir, config: { maxSteps: 4, checkpointEvery: 2 } });
    const snapshot = () =>
      stepDirs(dir).map((d) => [d, readFileSync(join(dir, 'checkpoints', d, COMPLETE_MARKER), 'utf8')]);
    const before = snapshot();
    await expect(
      fixtureRun({ outputDir: dir, config: { maxSteps: 4, checkpointEvery: 2, learningRate: 0.01 } }),
    ).rejects.toThrow(
      /belongs to a different run[\s\S]*config\.learningRate: 0\.05 in the checkpoint, 0\.01 now/,
    );
    await expect(
      fixtureRun({ outputDir: dir, dim: 8, config: { maxSteps: 4, checkpointEvery: 2 } }),
    ).rejects.toThrow(/trainables/);
    await expect(
      fixtureRun({
        outputDir: dir,
        config: { maxSteps: 4, checkpointEvery: 2 },
        fingerprintExtra: { adapter: 'lora' },
      }),
    ).rejects.toThrow(/extra\.adapter: absent in the checkpoint, "lora" now/);
    expect(snapshot()).toEqual(before);
    // Fields that cannot change the result (checkpointEvery, keepCheckpoints, logEvery) may change on resume.
    const same = await fixtureRun({
      outputDir: dir,
      config: { maxSteps: 4, checkpointEvery: 3, logEvery: 1 },
    });
    expect(same).toMatchObject({ stoppedBy: 'completed', resumedFrom: 4 });
  });

  it('resume: false refuses a directory with checkpoints; resume: true needs one', async () => {
    const dir = newDir();
    await fixtureRun({ outputDir: dir, config: { maxSteps: 2, warmupSteps: 1, checkpointEvery: 2 } });
    await expect(
      fixtureRun({
        outputDir: dir,
        resume: false,
        config: { maxSteps: 2, warmupSteps: 1, checkpointEvery: 2 },
      }),
    ).rejects.toThrow(/already holds 1 checkpoint\(s\) of this run \(newest: step 2\); pass --resume/);
    await expect(fixtureRun({ outputDir: newDir(), resume: true })).rejects.toThrow(/no complete checkpoint/);
  });

  it('reports progress as JSON lines when not on a terminal', async () => {
    const lines: string[] = [];
    const stream = {
      write: (s: string) => lines.push(s) > 0,
      isTTY: false,
    } as unknown as NodeJS.WritableStream;
    await fixtureRun({ outputDir: newDir(), progress: 'auto', logStream: stream, config: { maxSteps: 10 } });
    const events = lines.map((l) => JSON.parse(l) as { event: string; step?: number });
    expect(events[0]).toMatchObject({
      event: 'train.start',
      totalSteps: 10,
      trainSamples: 192,
      evalSamples: 8,
    });
    expect(events.filter((e) => e.event === 'train.step').map((e) => e.step)).toEqual([5, 10]);
    expect(events.filter((e) => e.event === 'train.checkpoint').map((e) => e.step)).toEqual([4, 8, 10]);
    expect(events.at(-1)).toMatchObject({ event: 'train.end', stoppedBy: 'completed', step: 10 });
    const step = events.find((e) => e.event === 'train.step') as Record<string, unknown>;
    expect(Object.keys(step)).toEqual(
      expect.arrayContaining(['loss', 'lr', 'gradNorm', 'tokensPerSec', 'etaSec', 'totalSteps']),
    );
  });

  it('a non-finite loss is a clear error that keeps the checkpoints written so far', async () => {
    const dir = newDir();
    const nanAfter = (p: StepProgram): StepProgram => {
      let n = 0;
      return {
        ...p,
        async lossAndGrads(batch, params) {
          const r = await p.lossAndGrads(batch, params);
          return ++n > 10 ? { ...r, lossSum: Number.NaN } : r;
        },
      };
    };
    await expect(fixtureRun({ outputDir: dir, wrap: nanAfter })).rejects.toThrow(
      /training diverged at step 6: the loss is NaN\. Lower learningRate/,
    );
    expect(stepDirs(dir)).toEqual(['step-4']);
  });
});

describe('packing', () => {
  const tok = tinyTokenizer();

  it('packed rows give each sample exactly its unpacked loss and gradients (no attention leaks)', async () => {
    const config = parseTrainConfig({ ...BASE_CONFIG, maxLength: 128 });
    const data = await tinyData(config);
    const [a, b, c] = [data.train[0]!, data.train[1]!, data.train[2]!].map((s) => ({
      ...s,
      // Shorter samples, so three fit one row of 128 positions.
      ids: s.ids.slice(0, 40),
      targets: s.targets.slice(0, 40).fill(1, 20),
    }));
    const opts = { padId: tok.eosId!, padToMultipleOf: 8 };
    const packed = attentionProgram({ vocab: tok.vocabSize, maxPositions: 128, packed: true });
    const leaky = attentionProgram({ vocab: tok.vocabSize, maxPositions: 128, packed: false });
    const params = new Map(packed.trainables.map((t) => [t.name, t.init]));
    try {
      const row = await packed.lossAndGrads(collatePacked([[a!, b!, c!]], opts), params);
      const alone = await Promise.all(
        [a!, b!, c!].map((s) => packed.lossAndGrads(collate([s], opts), params)),
      );
      const lossAlone = alone.reduce((n, r) => n + r.lossSum, 0);
      expect(row.tokens).toBe(alone.reduce((n, r) => n + r.tokens, 0));
      // Float32 sums over different shapes: relative 1e-5.
      expect(Math.abs(row.lossSum - lossAlone)).toBeLessThan(1e-5 * lossAlone);
      const summed = new Map(
        [...row.grads.keys()].map((k) => [
          k,
          alone.reduce(
            (acc, r) => acc.map((x, i) => x + r.grads.get(k)![i]!),
            new Float32Array(row.grads.get(k)!.length),
          ),
        ]),
      );
      expect(maxAbsDiff(row.grads, summed)).toBeLessThan(1e-4);
      // The control: plain causal attention over the packed row lets later samples see earlier ones.
      const leak = await leaky.loss(collatePacked([[a!, b!, c!]], opts), params);
      expect(Math.abs(leak.lossSum - lossAlone)).toBeGreaterThan(1e-2);
    } finally {
      await packed.release();
      await leaky.release();
    }
  });

  it('trains with packing on a program that supports it, and refuses one that does not', async () => {
    const config = parseTrainConfig({
      ...BASE_CONFIG,
      packing: true,
      maxSteps: 12,
      evalEvery: 6,
      checkpointEvery: 100,
    });
    const data = await tinyData(config);
    const program = attentionProgram({ vocab: tok.vocabSize, maxPositions: 128, packed: true });
    const bigram = bigramProgram({ vocab: tok.vocabSize });
    try {
      const base = {
        train: data.train,
        eval: data.eval,
        config,
        padId: tok.eosId!,
        progress: 'none' as const,
      };
      const r = await train({ ...base, program, outputDir: newDir() });
      const metrics = metricsWithoutTiming(r.metricsPath);
      expect(r.lastEvalLoss!).toBeLessThan(0.8 * (metrics[0]!.evalLoss as number));
      // Packed rows hold several samples: fewer, fuller sequences than micro-batches of whole samples.
      expect(metrics[1]!.inputTokens as number).toBeGreaterThan(4 * 100);
      await expect(train({ ...base, program: bigram, outputDir: newDir() })).rejects.toThrow(
        /packing: true needs a step program with block-diagonal attention/,
      );
    } finally {
      await program.release();
      await bigram.release();
    }
  });
});

describe('checkpoint store', () => {
  it('lists incomplete directories as incomplete and prunes them once a newer complete one exists', async () => {
    const dir = newDir();
    await fixtureRun({ outputDir: dir, config: { maxSteps: 4, checkpointEvery: 2, keepCheckpoints: 5 } });
    const store = new CheckpointStore(join(dir, 'checkpoints'), []);
    rmSync(join(dir, 'checkpoints', 'step-2', COMPLETE_MARKER));
    expect((await store.list()).map((c) => [c.step, c.complete])).toEqual([
      [2, false],
      [4, true],
    ]);
    await store.prune(5);
    expect(existsSync(join(dir, 'checkpoints', 'step-2'))).toBe(false);
    expect(existsSync(join(dir, 'checkpoints', 'step-4', COMPLETE_MARKER))).toBe(true);
  });
});
