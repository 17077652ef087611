/**
 * Training a real (tiny, generated) LLaMA checkpoint with each adapter type, through the LLaMA step program and
 * runTraining — the code `moka train` runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAdapterConfig, type AdapterType } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { loadAdapter } from '../../lib/adapters/adapter-files.ts';
import { openCheckpoint } from '../../lib/model/checkpoint.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { loadModelWeights } from '../../lib/model/model-weights.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { createLlamaStepProgram, gateMetrics } from '../../lib/train/llama-step-program.ts';
import { runTraining } from '../../lib/train/run-training.ts';
import { collate } from '../../lib/train/tokenize-batch.ts';
import { parseTrainConfig, type TrainConfigInput } from '../../lib/train/train-config.ts';
import { prepareTrainingData } from '../../lib/train/training-data.ts';
import { bitIdentical, metricsWithoutTiming } from './helpers.ts';

const DATA = fileURLToPath(new URL('../../examples/data/tiny-instructions.jsonl', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'moka-llama-train-'));
const model = join(root, 'tiny');
afterAll(() => rmSync(root, { recursive: true, force: true }));
beforeAll(async () => {
  // Hidden 256: the frozen head's rows have norm ≈ 0.02·√256, so logits can move by a few units (hidden 64 caps
  // what any adapter can do to the loss of a random model at about 1.3 units).
  await writeTinyCheckpoint({ dir: model, seed: 1, hiddenSize: 256, intermediateSize: 512, numLayers: 2 });
});

const training = (extra: TrainConfigInput = {}) =>
  parseTrainConfig({
    seed: 1,
    maxSteps: 60,
    microBatchSize: 4,
    promptTemplate: 'plain',
    maxLength: 128,
    padToMultipleOf: 16,
    evalRecords: 16,
    evalEvery: 20,
    warmupSteps: 2,
    checkpointEvery: 100,
    ...extra,
  });

describe('the LLaMA step program', () => {
  it('computes the summed token loss of the shifted labels, as the model scores them', async () => {
    const ckpt = await openCheckpoint(model);
    const weights = await loadModelWeights(ckpt);
    const tok = ckpt.tokenizer();
    const config = training();
    const data = await prepareTrainingData({ train: DATA, tokenizer: tok, config, warn: () => {} });
    const runtime = createAdapterRuntime(ckpt.config, parseAdapterConfig({ type: 'lora', r: 4 }), {
      seed: 1,
    });
    const program = createLlamaStepProgram({
      config: ckpt.config,
      weights,
      adapter: runtime,
      intraOpThreads: 1,
    });
    const llama = LlamaModel.fromWeights(ckpt.config, weights, { intraOpThreads: 1 });
    try {
      const samples = data.train.slice(0, 3);
      const params = new Map(program.trainables.map((t) => [t.name, t.init]));
      const r = await program.lossAndGrads(
        collate(samples, { padId: tok.eosId!, padToMultipleOf: 16 }),
        params,
      );
      // LoRA starts with B = 0: the model is the base model, so the loss is the base model's negative
      // log-likelihood of every target token, computed here in float64 from the model's own logits.
      const logits = await llama.logits(samples.map((s) => [...s.ids]));
      const V = ckpt.config.vocabSize;
      let nll = 0;
      let count = 0;
      samples.forEach((s, b) => {
        for (let t = 0; t + 1 < s.ids.length; t++) {
          if (!s.targets[t + 1]) continue;
          const row = logits[b]!.subarray(t * V, (t + 1) * V);
          let max = -Infinity;
          for (const x of row) max = Math.max(max, x);
          let z = 0;
          for (const x of row) z += Math.exp(x - max);
          nll -= row[s.ids[t + 1]!]! - max - Math.log(z);
          count++;
        }
      });
      expect(r.tokens).toBe(count);
      // Float32 sums over a few hundred tokens: 1e-5 relative.
      expect(Math.abs(r.lossSum - nll)).toBeLessThan(1e-5 * nll);
      // B = 0 makes dL/dA exactly 0; dL/dB is not.
      const a = r.grads.get('model.layers.0.self_attn.q_proj.lora_A')!;
      const bGrad = r.grads.get('model.layers.0.self_attn.q_proj.lora_B')!;
      expect(a.every((x) => x === 0)).toBe(true);
      expect(bGrad.some((x) => x !== 0)).toBe(true);
    } finally {
      await program.release();
      await llama.close();
      await ckpt.close();
    }
  });

  it('fp16 activations give the fp32 loss and gradients (loss rel < 1e-3, gradient cosine > 0.999) for MoKA, LoRA, DoRA', async () => {
    const ckpt = await openCheckpoint(model);
    const weights = await loadModelWeights(ckpt);
    const [batchSize, seqLen] = [2, 32];
    const batch = {
      inputIds: BigInt64Array.from({ length: batchSize * seqLen }, (_, i) => BigInt((i * 7919) % 500)),
      labels: BigInt64Array.from({ length: batchSize * seqLen }, (_, i) => BigInt((i * 104729 + 3) % 500)),
      attentionMask: new Uint8Array(batchSize * seqLen).fill(1),
      batchSize,
      seqLen,
    };
    const rowNorms = (m: string) => {
      const [rows, cols] = ckpt.info(`${m}.weight`).shape as [number, number];
      return new Float32Array(rows).fill(Math.sqrt(cols) * 0.02);
    };
    try {
      for (const type of ['moka', 'lora', 'dora'] as const) {
        const results = [];
        for (const precision of ['fp32', 'fp16'] as const) {
          const runtime = createAdapterRuntime(
            ckpt.config,
            parseAdapterConfig({ type, targetModules: 'all-linear' }),
            {
              seed: 1,
              baseRowNorms: rowNorms,
            },
          );
          // Non-zero adapter values, so every gradient path carries signal.
          const params = new Map(
            runtime.tensors.map((t) => [t.name, t.init.map((v, i) => v + 0.01 * Math.sin(i + 1))]),
          );
          const program = createLlamaStepProgram({
            config: ckpt.config,
            weights,
            adapter: runtime,
            precision,
            intraOpThreads: 1,
          });
          try {
            results.push(await program.lossAndGrads(batch, params));
          } finally {
            await program.release();
          }
        }
        const [f32, f16] = [results[0]!, results[1]!];
        expect(Math.abs(f16.lossSum - f32.lossSum) / f32.lossSum).toBeLessThan(1e-3);
        let dot = 0;
        let n32 = 0;
        let n16 = 0;
        for (const [name, g] of f32.grads) {
          const h = f16.grads.get(name)!;
          for (let i = 0; i < g.length; i++) {
            dot += g[i]! * h[i]!;
            n32 += g[i]! ** 2;
            n16 += h[i]! ** 2;
          }
        }
        expect(dot / Math.sqrt(n32 * n16)).toBeGreaterThan(0.999);
      }
    } finally {
      weights.dispose();
      await ckpt.close();
    }
  });

  it('reports MoKA gate values per layer (softmax of the gate logits, averaged over projections)', () => {
    const specs = [
      {
        name: 'model.layers.0.self_attn.q_proj.moka_gate',
        shape: [2],
        init: new Float32Array(2),
        group: 'gate' as const,
      },
      {
        name: 'model.layers.0.self_attn.v_proj.moka_gate',
        shape: [2],
        init: new Float32Array(2),
        group: 'gate' as const,
      },
      {
        name: 'model.layers.1.self_attn.q_proj.moka_gate',
        shape: [2],
        init: new Float32Array(2),
        group: 'gate' as const,
      },
    ];
    const params = new Map([
      [specs[0]!.name, Float32Array.of(0, 0)],
      [specs[1]!.name, Float32Array.of(Math.log(3), 0)],
      [specs[2]!.name, Float32Array.of(0, Math.log(4))],
    ]);
    const m = gateMetrics(specs, params);
    expect(Object.keys(m)).toEqual(['gate.layer0', 'gate.layer1']);
    // layer 0: mean of (½, ½) and (¾, ¼); layer 1: (⅕, ⅘)
    expect(m['gate.layer0']![0]).toBeCloseTo(0.625, 6);
    expect(m['gate.layer1']![1]).toBeCloseTo(0.8, 6);
  });
});

describe('training a tiny LLaMA with each adapter type', () => {
  // Learning rates per type, as one would tune them: LoRA/DoRA move faster per unit of learning rate.
  const cases: [AdapterType, number][] = [
    ['moka', 0.02],
    ['mokas', 0.03],
    ['krona', 0.02],
    ['lora', 0.005],
    ['dora', 0.005],
  ];
  for (const [type, learningRate] of cases) {
    it(`${type}: lowers the held-out loss by more than 1 nat in 60 steps and writes the adapter`, async () => {
      const out = join(root, `run-${type}`);
      const r = await runTraining({
        modelDir: model,
        train: [DATA],
        outputDir: out,
        training: training({ learningRate }),
        adapter: parseAdapterConfig({ type, targetModules: 'all-linear' }),
        intraOpThreads: 1,
        progress: 'none',
        handleSignals: false,
        warn: () => {},
      });
      const evals = metricsWithoutTiming(r.metricsPath)
        .filter((m) => 'evalLoss' in m)
        .map((m) => m.evalLoss as number);
      // Figures (seed 1): every type starts at 6.259; after 60 steps moka 4.47, dora 4.67, lora 4.75, krona 4.76,
      // mokas 5.02 (5.8k parameters).
      expect(evals).toHaveLength(4);
      expect(evals.at(-1)!).toBeLessThan(evals[0]! - 1);
      expect(r.adapterDir).toBe(join(out, 'adapter'));
      const ckpt = await openCheckpoint(model);
      try {
        // DoRA's runtime wants base row norms to initialise magnitudes; loading replaces them, so zeros do.
        const saved = await loadAdapter(r.adapterDir!, ckpt.config, {
          baseRowNorms: (m) => new Float32Array(ckpt.info(`${m}.weight`).shape[0]!),
        });
        expect(saved.runtime.config.type).toBe(type);
        expect(bitIdentical(saved.values, r.params)).toBe(true);
      } finally {
        await ckpt.close();
      }
    });
  }

  it('trains on a 4-bit (NF4, double quant) base whose projections stay 4-bit: QLoRA-style', async () => {
    const qdir = join(root, 'tiny-nf4');
    await quantizeCheckpoint({ modelDir: model, outDir: qdir, format: 'nf4', doubleQuant: true });
    const r = await runTraining({
      modelDir: qdir,
      train: [DATA],
      outputDir: join(root, 'run-nf4'),
      training: training({ learningRate: 0.005 }),
      adapter: parseAdapterConfig({ type: 'lora', targetModules: 'all-linear' }),
      intraOpThreads: 1,
      progress: 'none',
      handleSignals: false,
      warn: () => {},
    });
    const evals = metricsWithoutTiming(r.metricsPath)
      .filter((m) => 'evalLoss' in m)
      .map((m) => m.evalLoss as number);
    expect(evals.at(-1)!).toBeLessThan(evals[0]! - 1);
    // run-lora: the float-base LoRA run of the case above (tests of a file run in order).
    const float = metricsWithoutTiming(join(root, 'run-lora', 'metrics.jsonl'));
    // The quantized base is a different model: same data and seed, another loss curve.
    expect(evals[0]).not.toBe(float[0]!.evalLoss);
  });

  it('LoRA with adapter dropout trains, is reproducible, and resumes to bit-identical weights', async () => {
    const run = (dir: string, maxSteps: number, dropout = 0.1) =>
      runTraining({
        modelDir: model,
        train: [DATA],
        outputDir: join(root, dir),
        training: training({ maxSteps, evalEvery: 3, learningRate: 0.005, checkpointEvery: 3 }),
        adapter: parseAdapterConfig({ type: 'lora', r: 4, dropout }),
        intraOpThreads: 1,
        progress: 'none',
        handleSignals: false,
        warn: () => {},
      });
    const a = await run('dropout-a', 6);
    const b = await run('dropout-b', 6);
    expect(bitIdentical(a.params, b.params)).toBe(true);
    // Dropout changes the trajectory: the same run without it ends elsewhere.
    const none = await run('dropout-none', 6, 0);
    expect(bitIdentical(a.params, none.params)).toBe(false);
    // Lose everything after the step-3 checkpoint, then resume: the masks are drawn from the data position, so
    // the resumed steps 4-6 draw the same masks as the uninterrupted run.
    await run('dropout-resume', 6);
    rmSync(join(root, 'dropout-resume', 'checkpoints', 'step-6'), { recursive: true, force: true });
    const resumed = await run('dropout-resume', 6);
    expect(resumed.resumedFrom).toBe(3);
    expect(bitIdentical(resumed.params, a.params)).toBe(true);
  });

  it('is reproducible: the same seed gives bit-identical adapter weights; the gate values are logged', async () => {
    const run = (dir: string) =>
      runTraining({
        modelDir: model,
        train: [DATA],
        outputDir: join(root, dir),
        training: training({ maxSteps: 6, evalEvery: 3, learningRate: 0.02 }),
        adapter: parseAdapterConfig({ type: 'moka' }),
        intraOpThreads: 1,
        progress: 'none',
        handleSignals: false,
        warn: () => {},
      });
    const a = await run('repro-a');
    const b = await run('repro-b');
    expect(bitIdentical(a.params, b.params)).toBe(true);
    const metrics = metricsWithoutTiming(a.metricsPath);
    expect(metrics).toEqual(metricsWithoutTiming(b.metricsPath));
    const gates = metrics.at(-1)!['gate.layer0'] as number[];
    expect(gates).toHaveLength(5);
    expect(gates.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 6);
  });
});
