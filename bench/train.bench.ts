/**
 * Training benchmarks (issue: training). The optimizer runs in TypeScript on Float32Arrays, once per optimizer
 * step, so its cost per parameter matters for LoRA-sized adapters (tens of millions of parameters):
 * - AdamW on 10M parameters: the fused single-pass update (lib/train/adamw.ts) vs a naive multi-pass update with
 *   temporaries, written the way the formula reads (decay, moments, bias-corrected copies, then the step);
 * - the whole host side of an optimizer step on 10M parameters: accumulating two micro-batch gradients, dividing
 *   by the token count, global-norm clipping and AdamW (what the trainer adds to the ORT runs of a step).
 * - training tokens/s of a small LLaMA (4 layers, hidden 256) with MoKA and with LoRA on every linear projection:
 *   one micro-batch of 4 × 256 tokens through the LLaMA step program (forward, loss, adapter gradients), and the
 *   model FLOP/s this achieves as a fraction of a plain 1024³ matmul's GFLOP/s measured in the same run.
 */
import { Graph, Session, matmul } from '../lib/engine/index.ts';
import { parseAdapterConfig } from '../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../lib/adapters/adapter-runtime.ts';
import type { LlamaConfig } from '../lib/model/config.ts';
import { adamwUpdate, type AdamWHyperparameters } from '../lib/train/adamw.ts';
import { clipGradNorm } from '../lib/train/clip.ts';
import { createLlamaStepProgram } from '../lib/train/llama-step-program.ts';
import { TINY_TRAINING_MODEL, tinyTrainingSetup } from './tiny-training-setup.ts';
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

/** A plain float32 1024×1024×1024 matmul through the engine: the machine's reference rate. */
function matmulReference(): { run: () => Promise<unknown>; flops: number; release: () => Promise<void> } {
  const n = 1024;
  const g = new Graph('matmul-ref');
  const a = g.input('a', 'float32', [n, n]);
  const b = g.input('b', 'float32', [n, n]);
  const s = new Session(g, { inputs: [a, b], outputs: { c: matmul(a, b) } });
  const feeds = { a: randomFloat32(n * n, 21), b: randomFloat32(n * n, 22) };
  return { run: () => s.run(feeds), flops: 2 * n ** 3, release: () => s.release() };
}

/**
 * Model FLOPs of one training micro-batch: the forward matmuls (projections, attention, LM head) plus the
 * backward's input gradients, which cost as much again; frozen weights get no weight gradient, and the
 * adapters' own work is left out (it is what differs between adapter types, so it shows in tokens/s).
 */
function trainingFlops(cfg: LlamaConfig, batch: number, seq: number): number {
  const { hiddenSize: h, intermediateSize: f, numHeads: hq, numKvHeads: hkv, headDim: d, vocabSize: v } = cfg;
  const projParams = h * hq * d + 2 * h * hkv * d + hq * d * h + 3 * h * f;
  const tokens = batch * seq;
  const matmuls = 2 * tokens * (cfg.numLayers * projParams + h * v);
  const attention = cfg.numLayers * 4 * batch * hq * seq * seq * d; // QKᵀ and PV, full S×S as computed
  return 2 * (matmuls + attention);
}

async function llamaTraining(): Promise<BenchEntry[]> {
  const setup = await tinyTrainingSetup();
  const { weights, batch: tokenBatch } = setup;
  const { batchSize: batch, seqLen: seq } = tokenBatch;
  try {
    const cfg = setup.ckpt.config;
    const flops = trainingFlops(cfg, batch, seq);
    const build = (type: 'moka' | 'lora') => {
      const runtime = createAdapterRuntime(cfg, parseAdapterConfig({ type, targetModules: 'all-linear' }), {
        seed: 1,
      });
      const program = createLlamaStepProgram({ config: cfg, weights, adapter: runtime });
      const params = new Map(program.trainables.map((t) => [t.name, t.init]));
      return {
        program,
        params: runtime.plan.totalParams,
        run: () => program.lossAndGrads(tokenBatch, params),
      };
    };
    const programs = { moka: build('moka'), lora: build('lora') };
    const ref = matmulReference();
    // Interleaved rounds, so that load from anything else on the machine hits all three alike.
    const times = { moka: [] as number[], lora: [] as number[], ref: [] as number[] };
    for (let r = 0; r < 5; r++) {
      times.ref.push(await medianMs(ref.run, 3, r === 0 ? 2 : 0));
      times.moka.push(await medianMs(programs.moka.run, 1, r === 0 ? 2 : 0));
      times.lora.push(await medianMs(programs.lora.run, 1, r === 0 ? 2 : 0));
    }
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const reference = ref.flops / (med(times.ref) / 1e3) / 1e9;
    const moka = { ms: med(times.moka), params: programs.moka.params };
    const lora = { ms: med(times.lora), params: programs.lora.params };
    await ref.release();
    await programs.moka.program.release();
    await programs.lora.program.release();
    const tps = (ms: number) => (batch * seq) / (ms / 1e3);
    const model = `${TINY_TRAINING_MODEL}; ${batch}×${seq} tokens per micro-batch`;
    const entry = (type: string, r: { ms: number; params: number }): BenchEntry => ({
      name: `train.llama_4x256.${type}.gflops_fraction`,
      value: round(flops / (r.ms / 1e3) / 1e9),
      unit: 'GFLOP/s',
      baseline: 'a plain 1024×1024×1024 float32 matmul (engine, CPU provider, same run)',
      baselineValue: round(reference),
      ratio: round(flops / (r.ms / 1e3) / 1e9 / reference),
      notes:
        `${type} on all 7 projections (${r.params} trainable parameters): ${round(tps(r.ms))} tokens/s, ` +
        `${round(r.ms)} ms per micro-batch (forward, summed loss, adapter gradients); ${model}; ` +
        'model FLOPs = forward matmuls and attention + the same again for input gradients (adapter work excluded)',
    });
    return [
      {
        name: 'train.llama_4x256.moka.tokens_per_s',
        value: round(tps(moka.ms)),
        unit: 'tokens/s',
        baseline: 'LoRA (default r) on the same projections, same model and batch',
        baselineValue: round(tps(lora.ms)),
        ratio: round(lora.ms / moka.ms),
        notes: `CPU provider, float32, ORT's default threads; ${model}`,
      },
      entry('moka', moka),
      entry('lora', lora),
    ];
  } finally {
    await setup.dispose();
  }
}

export const trainSuite: Suite = {
  name: 'train',
  run: async () => [await adamwThroughput(), await hostStep(), ...(await llamaTraining())],
};
