// The ORT forward graph against the float64 reference on every checkpoint variant, dtype/shard invariance of
// the loaded logits, and the projection hooks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { linear, mul, type Tensor } from '../../lib/engine/index.ts';
import { openCheckpoint, writeCheckpoint, type CheckpointTensorInput } from '../../lib/model/checkpoint.ts';
import { PROJECTION_NAMES } from '../../lib/model/config.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import type { ModelWeights } from '../../lib/model/model-weights.ts';
import type { ProjectionContext, ProjectionHooks } from '../../lib/model/projection.ts';
import { ropeInverseFrequencies } from '../../lib/model/rope-frequencies.ts';
import { writeTinyCheckpoint, type TinyCheckpointOptions } from '../../lib/model/tiny-checkpoint.ts';
import { maxRelativeError, referenceForward, referenceInvFreq, referenceWeights } from './reference-llama.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-forward-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Deterministic token ids in [1, 500). */
function tokens(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 1 + ((i * 7919 + seed * 104729) % 499));
}

const VARIANTS: Record<string, Omit<TinyCheckpointOptions, 'dir'>> = {
  mha: { numHeads: 4, numKvHeads: 4 },
  gqa: { numHeads: 4, numKvHeads: 2 },
  'gqa-1kv': { numHeads: 4, numKvHeads: 1 },
  tied: { tieWordEmbeddings: true },
  'explicit-head-dim': { hiddenSize: 48, numHeads: 4, numKvHeads: 2, headDim: 20 },
  'llama3-rope-scaling': {
    ropeTheta: 500000,
    ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 },
    maxPositionEmbeddings: 128,
  },
  bf16: { dtype: 'bfloat16' },
  f16: { dtype: 'float16' },
  sharded: { shards: 3 },
  'bf16-sharded-tied-gqa': { dtype: 'bfloat16', shards: 4, tieWordEmbeddings: true, numKvHeads: 1 },
};

describe('forward graph vs float64 reference', () => {
  for (const [name, opts] of Object.entries(VARIANTS)) {
    it(`${name}: max relative logit error < 1e-4 (float32 vs float64)`, async () => {
      const dir = join(root, name);
      await writeTinyCheckpoint({ dir, seed: 11, ...opts });
      const model = await LlamaModel.load(dir);
      try {
        const ref = await referenceWeights(model.checkpoint!);
        // Two sequences of different lengths in one batch: the shorter one is right-padded by the model.
        const seqs = [tokens(37, 1), tokens(9, 2)];
        const got = await model.logits(seqs);
        for (let b = 0; b < seqs.length; b++) {
          const err = maxRelativeError(got[b]!, referenceForward(ref, seqs[b]!));
          // float32 accumulation over hidden ≤ 64 and 2 layers: ~1e-6 observed; 1e-4 is the acceptance bound.
          expect(err).toBeLessThan(1e-4);
        }
      } finally {
        await model.close();
      }
    });
  }

  it('llama3 scaling changes the inverse frequencies as transformers does (float32 vs the float64 formula)', () => {
    const cfg = {
      headDim: 64,
      ropeTheta: 500000,
      ropeScaling: {
        type: 'llama3' as const,
        factor: 32,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      },
    };
    const got = ropeInverseFrequencies(cfg);
    const want = referenceInvFreq(cfg as never);
    for (let i = 0; i < 32; i++) expect(Math.abs(got[i]! - want[i]!) / want[i]!).toBeLessThan(1e-6);
    // High frequencies are kept, low ones divided by the factor, the band between interpolated.
    const plain = ropeInverseFrequencies({ ...cfg, ropeScaling: null });
    expect(got[0]).toBe(plain[0]);
    expect(got[31]).toBeCloseTo(plain[31]! / 32, 12);
    const medium = [...got].findIndex(
      (v, i) => v !== plain[i] && Math.abs(v - plain[i]! / 32) > 1e-12 * plain[i]!,
    );
    expect(medium).toBeGreaterThan(0);
  });
});

describe('dtype and sharding', () => {
  it('a sharded bf16 checkpoint gives the same logits as its weights saved as one float32 file', async () => {
    const bf16Dir = join(root, 'same-bf16');
    const f32Dir = join(root, 'same-f32');
    await writeTinyCheckpoint({ dir: bf16Dir, seed: 5, dtype: 'bfloat16', shards: 3 });
    const src = await openCheckpoint(bf16Dir);
    const tensors = new Map<string, CheckpointTensorInput>();
    for (const name of src.tensorNames()) {
      tensors.set(name, { dtype: 'F32', shape: src.info(name).shape, data: await src.readFloat32(name) });
    }
    await writeCheckpoint(f32Dir, { config: src.config.raw, tensors, tokenizerJson: src.tokenizerJson! });
    await src.close();

    const seqs = [tokens(20, 3), tokens(5, 4)];
    const bf16 = await LlamaModel.load(bf16Dir);
    // The same bf16 weights converted into a temporary float32 file instead of memory.
    const spilled = await LlamaModel.load(bf16Dir, { weights: { spillBytes: 0 } });
    const f32 = await LlamaModel.load(f32Dir);
    try {
      expect(f32.checkpoint!.weightFiles()).toEqual(['model.safetensors']);
      expect(bf16.checkpoint!.weightFiles()).toHaveLength(3);
      const a = await bf16.logits(seqs);
      const b = await f32.logits(seqs);
      const c = await spilled.logits(seqs);
      // Identical float32 weights and graph: identical logits (ORT's CPU kernels are deterministic).
      for (let i = 0; i < seqs.length; i++) {
        expect(maxRelativeError(a[i]!, b[i]!)).toBe(0);
        expect(maxRelativeError(c[i]!, b[i]!)).toBe(0);
      }
    } finally {
      await Promise.all([bf16.close(), f32.close(), spilled.close()]);
    }
  });

  it('float32 weights are referenced in the safetensors file, not read', async () => {
    const dir = join(root, 'refs');
    await writeTinyCheckpoint({ dir, seed: 1, numLayers: 1 });
    const model = await LlamaModel.load(dir);
    const w = model.weights as ModelWeights;
    const d = w.data('model.layers.0.self_attn.q_proj.weight');
    expect(d).toMatchObject({ file: join(dir, 'model.safetensors'), length: 64 * 64 * 4 });
    await model.close();
  });
});

describe('projection hooks', () => {
  it('wrap is called once per named projection per graph, and an identity wrap changes nothing', async () => {
    const dir = join(root, 'hooks');
    await writeTinyCheckpoint({ dir, seed: 2 });
    const seqs = [tokens(12, 9)];
    const plain = await LlamaModel.load(dir);
    const want = (await plain.logits(seqs))[0]!;
    await plain.close();

    const seen: ProjectionContext[] = [];
    const hooks: ProjectionHooks = {
      wrap: (ctx, x, base) => {
        seen.push(ctx);
        return base(x);
      },
    };
    const model = await LlamaModel.load(dir, { hooks });
    const got = (await model.logits(seqs))[0]!;
    await model.close();
    expect(maxRelativeError(got, want)).toBe(0);
    expect(seen.map((c) => `${c.layer}.${c.proj}`)).toEqual(
      [0, 1].flatMap((l) => PROJECTION_NAMES.map((p) => `${l}.${p}`)),
    );
    expect(seen.find((c) => c.layer === 1 && c.proj === 'down_proj')).toEqual({
      layer: 1,
      proj: 'down_proj',
      weightName: 'model.layers.1.mlp.down_proj.weight',
      outFeatures: 64,
      inFeatures: 128,
    });
  });

  it('a wrap can change the output, including through a graph input fed with `feeds`', async () => {
    const dir = join(root, 'hooks');
    const seqs = [tokens(12, 9)];
    const plain = await LlamaModel.load(dir);
    const want = (await plain.logits(seqs))[0]!;
    await plain.close();
    const hooks: ProjectionHooks = {
      wrap: (ctx, x, base) => {
        if (ctx.layer !== 1 || ctx.proj !== 'v_proj') return base(x);
        const s = x.graph.input('v_scale', 'float32', [1]);
        return mul(base(x), s);
      },
    };
    for (const [scale, same] of [
      [1, true],
      [0.5, false],
    ] as const) {
      const model = await LlamaModel.load(dir, { hooks, feeds: { v_scale: Float32Array.of(scale) } });
      const got = (await model.logits(seqs))[0]!;
      await model.close();
      const err = maxRelativeError(got, want);
      if (same) expect(err).toBe(0);
      else expect(err).toBeGreaterThan(1e-3);
    }
  });

  it('base supplies the frozen projection (here: the same weight from memory), wrap sees it', async () => {
    const dir = join(root, 'hooks');
    const seqs = [tokens(12, 9)];
    const ckpt = await openCheckpoint(dir);
    const q0 = await ckpt.readFloat32('model.layers.0.self_attn.q_proj.weight');
    await ckpt.close();
    const plain = await LlamaModel.load(dir);
    const want = (await plain.logits(seqs))[0]!;
    await plain.close();
    let baseCalls = 0;
    const hooks = (negate: boolean): ProjectionHooks => ({
      base: (ctx, graph) => {
        if (ctx.weightName !== 'model.layers.0.self_attn.q_proj.weight') return undefined;
        baseCalls++;
        const data = negate ? q0.map((v) => -v) : q0;
        const w = graph.weight('q0_from_memory', 'float32', [ctx.outFeatures, ctx.inFeatures], data);
        return (x: Tensor) => linear(x, w);
      },
    });
    // The quantization issue skips the weights it supplies itself: they are never loaded.
    const skip = (n: string) => n !== 'model.layers.0.self_attn.q_proj.weight';
    const same = await LlamaModel.load(dir, { hooks: hooks(false), weights: { include: skip } });
    expect(maxRelativeError((await same.logits(seqs))[0]!, want)).toBe(0);
    await same.close();
    const changed = await LlamaModel.load(dir, { hooks: hooks(true), weights: { include: skip } });
    expect(maxRelativeError((await changed.logits(seqs))[0]!, want)).toBeGreaterThan(1e-3);
    await changed.close();
    expect(baseCalls).toBe(2);
  });

  it('a hook returning the wrong width fails at build time naming the projection', async () => {
    const dir = join(root, 'hooks');
    const model = await LlamaModel.load(dir, {
      hooks: { wrap: (ctx, x, base) => (ctx.proj === 'k_proj' ? x : base(x)) },
    });
    await expect(model.logits([[1, 2, 3]])).rejects.toThrow(
      /projection model\.layers\.0\.self_attn\.k_proj\.weight: the hooks returned .* ending in 32/,
    );
    await model.close();
  });
});
