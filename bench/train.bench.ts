/**
 * Training benchmarks (issue: training). The optimizer runs in TypeScript on Float32Arrays, once per optimizer
 * step, so its cost per parameter matters for LoRA-sized adapters (tens of millions of parameters):
 * - AdamW on 10M parameters: the fused single-pass update (lib/train/adamw.ts) vs a naive multi-pass update with
 *   temporaries, written the way the formula reads (decay, moments, bias-corrected copies, then the step);
 * - the whole host side of an optimizer step on 10M parameters: accumulating two micro-batch gradients, dividing
 *   by the token count, global-norm clipping and AdamW (what the trainer adds to the ORT runs of a step).
 * Training tokens/s with MoKA and LoRA on a small LLaMA belongs here too once the model's step program is wired
 * into the trainer.
 */
import { adamwUpdate, type AdamWHyperparameters } from '../lib/train/adamw.ts';
import { clipGradNorm } from '../lib/train/clip.ts';
import { medianMs, randomFloat32, round, type BenchEntry, type Suite } from './harness.ts';

const N = 10_000_000;
const HP: AdamWHyperparameters = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/** The baseline: one pass per line of the algorithm, each allocating its result, as a direct transcription. */
function naiveAdamw(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  step: number,
  lr: number,
  wd: number,
): void {
  const decayed = p.map((x) => x * (1 - lr * wd));
  const mNew = m.map((x, i) => HP.beta1 * x + (1 - HP.beta1) * g[i]!);
  const vNew = v.map((x, i) => HP.beta2 * x + (1 - HP.beta2) * g[i]! * g[i]!);
  const mHat = mNew.map((x) => x / (1 - HP.beta1 ** step));
  const vHat = vNew.map((x) => x / (1 - HP.beta2 ** step));
  const update = mHat.map((x, i) => (lr * x) / (Math.sqrt(vHat[i]!) + HP.eps));
  m.set(mNew);
  v.set(vNew);
  p.set(decayed.map((x, i) => x - update[i]!));
}

async function adamwThroughput(): Promise<BenchEntry> {
  const p = randomFloat32(N, 1);
  const g = randomFloat32(N, 2);
  const m = new Float32Array(N);
  const v = new Float32Array(N);
  let step = 0;
  // Interleaved rounds so machine noise hits both alike.
  const fused: number[] = [];
  const naive: number[] = [];
  for (let r = 0; r < 3; r++) {
    fused.push(
      await medianMs(async () => adamwUpdate(p, g, m, v, ++step, 1e-4, 0.01, HP), 3, r === 0 ? 1 : 0),
    );
    naive.push(await medianMs(async () => naiveAdamw(p, g, m, v, ++step, 1e-4, 0.01), 1, r === 0 ? 1 : 0));
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const tFused = med(fused);
  const tNaive = med(naive);
  return {
    name: 'train.adamw.10M.elements_per_s',
    value: round(N / (tFused / 1e3) / 1e6),
    unit: 'M elements/s',
    baseline: 'naive multi-pass AdamW with a temporary array per line of the algorithm',
    baselineValue: round(N / (tNaive / 1e3) / 1e6),
    ratio: round(tNaive / tFused),
    notes: `${N} float32 parameters, one thread (Node), median of interleaved rounds; fused ${round(tFused)} ms/step`,
  };
}

async function hostStep(): Promise<BenchEntry> {
  const p = randomFloat32(N, 3);
  const m = new Float32Array(N);
  const v = new Float32Array(N);
  const micro = [randomFloat32(N, 4), randomFloat32(N, 5)];
  const acc = new Float32Array(N);
  let step = 0;
  const t = await medianMs(
    async () => {
      acc.fill(0);
      for (const g of micro) for (let i = 0; i < N; i++) acc[i] = acc[i]! + g[i]!;
      for (let i = 0; i < N; i++) acc[i] = acc[i]! / 1000;
      clipGradNorm([acc], 1);
      adamwUpdate(p, acc, m, v, ++step, 1e-4, 0.01, HP);
    },
    3,
    1,
  );
  return {
    name: 'train.host_step.10M.ms',
    value: round(t),
    unit: 'ms',
    notes:
      'per optimizer step on 10M parameters: accumulate 2 micro-batch gradients, divide by the token count, ' +
      'global-norm clipping, AdamW (the TypeScript side of a step; adapters of MoKA size take well under 1 ms)',
  };
}

export const trainSuite: Suite = {
  name: 'train',
  run: async () => [await adamwThroughput(), await hostStep()],
};
