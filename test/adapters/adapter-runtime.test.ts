/**
 * Every adapter type on every kind of projection of a small GQA model (square and non-square layers, mixed
 * component shapes): the fused graph output equals x·(merged weight)ᵀ computed explicitly by merge.ts; the
 * update is zero at initialisation; gradients pass finite differences.
 */
import { describe, expect, it } from 'vitest';
import { Graph, Session, dropoutMaskReference, linear, type Tensor } from '../../lib/engine/index.ts';
import { fnv1a } from '../../lib/engine/random.ts';
import { gradCheck, randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import { parseLlamaConfig } from '../../lib/model/config.ts';
import { parseAdapterConfig, type AdapterConfigInput } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime, type AdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { componentDeltas, mergeWeight } from '../../lib/adapters/merge.ts';

// hidden 16, 4 heads of 4 with 2 kv heads (k/v: 8x16), MLP 24: q/o 16x16, k/v 8x16, gate/up 24x16, down 16x24.
const llama = parseLlamaConfig({
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
});

const CONFIGS: Record<string, AdapterConfigInput> = {
  'moka (mixed shapes, a stacked pair)': {
    type: 'moka',
    targetModules: 'all-linear',
    components: {
      q_proj: [{ shape: [4, 4, 4, 4] }, { shape: [4, 4, 4, 4] }, { shape: [2, 8, 8, 2] }],
      k_proj: [{ shape: [2, 4, 4, 4] }, { shape: [4, 2, 2, 8] }],
      down_proj: [{ shape: [4, 6, 4, 4] }, { shape: [2, 3, 8, 8] }],
    },
    plan: { count: 2 },
    scale: 0.5,
  },
  'moka, token gate': {
    type: 'moka',
    targetModules: ['q_proj', 'up_proj'],
    gate: 'token',
    plan: { count: 3 },
  },
  'moka, gate none': { type: 'moka', targetModules: ['v_proj'], gate: 'none', plan: { count: 2 } },
  mokas: { type: 'mokas', targetModules: 'all-linear', plan: { count: 2 } },
  krona: { type: 'krona', targetModules: 'all-linear', alpha: 2 },
  'krona, low-rank w2 (LoKr r)': { type: 'krona', targetModules: ['gate_proj'], decomposeFactor: 2, r: 1 },
  'krona, both factors low-rank (LoKr decomposeBoth)': {
    type: 'krona',
    targetModules: ['q_proj', 'up_proj'],
    decomposeFactor: 4,
    r: 1,
    decomposeBoth: true,
  },
  lora: { type: 'lora', targetModules: 'all-linear', r: 2, alpha: 4 },
  dora: { type: 'dora', targetModules: ['q_proj', 'k_proj', 'down_proj'], r: 2, alpha: 4 },
  'dora, exact norm gradient': { type: 'dora', targetModules: ['k_proj'], r: 2, alpha: 4, detachNorm: false },
};

const rand = seededRandom(3);
const baseWeights = new Map<string, Float32Array>();
function baseWeight(module: string, out: number, inn: number): Float32Array {
  let w = baseWeights.get(module);
  if (!w) {
    w = Float32Array.from(randomNormal(out * inn, rand, 0.3));
    baseWeights.set(module, w);
  }
  return w;
}
function rowNorms(module: string): Float32Array {
  const p =
    module.endsWith('k_proj') || module.endsWith('v_proj')
      ? [8, 16]
      : module.endsWith('down_proj')
        ? [16, 24]
        : module.endsWith('gate_proj') || module.endsWith('up_proj')
          ? [24, 16]
          : [16, 16];
  const w = baseWeight(module, p[0]!, p[1]!);
  return Float32Array.from({ length: p[0]! }, (_, r) =>
    Math.hypot(...w.subarray(r * p[1]!, (r + 1) * p[1]!)),
  );
}

function runtimeFor(cfg: AdapterConfigInput): AdapterRuntime {
  return createAdapterRuntime(llama, parseAdapterConfig(cfg), { seed: 5, baseRowNorms: rowNorms });
}

/** Random non-zero values for every adapter tensor (the initial update is zero by design). */
function randomValues(rt: AdapterRuntime): Map<string, Float32Array> {
  return new Map(rt.tensors.map((t) => [t.name, Float32Array.from(randomNormal(t.init.length, rand, 0.5))]));
}

async function fusedOutput(
  rt: AdapterRuntime,
  module: string,
  x: Float32Array,
  tokens: number,
  values: ReadonlyMap<string, Float32Array>,
) {
  const p = rt.projectionOf(module)!;
  const g = new Graph('adapter');
  const w0 = g.weight('w0', 'float32', [p.out, p.in], baseWeight(module, p.out, p.in));
  const xt = g.input('x', 'float32', [tokens, p.in]);
  const inputs = new Map<string, Tensor>();
  const y = rt.project(
    module,
    xt,
    (v) => linear(v, w0),
    (name) => {
      if (!inputs.has(name))
        inputs.set(name, g.input(name, 'float32', rt.tensors.find((t) => t.name === name)!.shape));
      return inputs.get(name)!;
    },
  );
  const s = new Session(g, { inputs: [xt, ...inputs.values()], outputs: { y } });
  const feeds: Record<string, Float32Array> = { x };
  for (const name of inputs.keys()) feeds[name] = values.get(name)!;
  const out = (await s.run(feeds)).y!.data as Float32Array;
  await s.release();
  return out;
}

function explicitOutput(
  x: Float32Array,
  tokens: number,
  w: Float32Array,
  out: number,
  inn: number,
): Float64Array {
  const y = new Float64Array(tokens * out);
  for (let t = 0; t < tokens; t++)
    for (let o = 0; o < out; o++) {
      let acc = 0;
      for (let i = 0; i < inn; i++) acc += x[t * inn + i]! * w[o * inn + i]!;
      y[t * out + o] = acc;
    }
  return y;
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

/** Token gate: y_t = x_t·W0ᵀ + Σ_i softmax(W_g x_t)_i · x_t·(s ΔW_i)ᵀ, explicitly. */
function tokenGatedOutput(
  rt: AdapterRuntime,
  module: string,
  x: Float32Array,
  tokens: number,
  values: ReadonlyMap<string, Float32Array>,
): Float64Array {
  const p = rt.projectionOf(module)!;
  const parts = componentDeltas(rt, module, values);
  const wg = values.get(`${module}.${rt.config.type}_gate_proj`)!;
  const y = explicitOutput(x, tokens, baseWeight(module, p.out, p.in), p.out, p.in);
  for (let t = 0; t < tokens; t++) {
    const logits = parts.map((_, i) => {
      let acc = 0;
      for (let j = 0; j < p.in; j++) acc += wg[i * p.in + j]! * x[t * p.in + j]!;
      return acc;
    });
    const m = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - m));
    const z = e.reduce((a, b) => a + b, 0);
    parts.forEach((d, i) => {
      for (let o = 0; o < p.out; o++) {
        let acc = 0;
        for (let j = 0; j < p.in; j++) acc += x[t * p.in + j]! * d[o * p.in + j]!;
        y[t * p.out + o]! += (e[i]! / z) * acc;
      }
    });
  }
  return y;
}

describe.each(Object.entries(CONFIGS))('adapter %s', (_label, cfg) => {
  const rt = runtimeFor(cfg);
  const tokens = 6;
  const tokenGated = 'gate' in rt.config && rt.config.gate === 'token';

  it('fused output equals the explicit update on every adapted projection (float32, rel < 1e-5)', async () => {
    const values = randomValues(rt);
    expect(rt.modules.length).toBeGreaterThan(0);
    for (const module of rt.modules) {
      const p = rt.projectionOf(module)!;
      const x = Float32Array.from(randomNormal(tokens * p.in, rand));
      const y = await fusedOutput(rt, module, x, tokens, values);
      const expected = tokenGated
        ? tokenGatedOutput(rt, module, x, tokens, values)
        : explicitOutput(
            x,
            tokens,
            mergeWeight(rt, module, baseWeight(module, p.out, p.in), values),
            p.out,
            p.in,
          );
      expect(relErr(y, expected)).toBeLessThan(1e-5);
    }
  });

  it('the update is zero at initialisation (rel < 1e-6: DoRA divides by a recomputed norm)', async () => {
    const init = new Map(rt.tensors.map((t) => [t.name, t.init]));
    for (const module of rt.modules.slice(0, 3)) {
      const p = rt.projectionOf(module)!;
      const x = Float32Array.from(randomNormal(tokens * p.in, rand));
      const y = await fusedOutput(rt, module, x, tokens, init);
      expect(relErr(y, explicitOutput(x, tokens, baseWeight(module, p.out, p.in), p.out, p.in))).toBeLessThan(
        1e-6,
      );
    }
  });

  it('gradients pass finite differences (rel < 1e-6)', async () => {
    const module = rt.modules[0]!;
    const p = rt.projectionOf(module)!;
    const own = rt.tensors.filter((t) => t.name.startsWith(`${module}.`));
    const values = randomValues(rt);
    const w0 = Float64Array.from(baseWeight(module, p.out, p.in));
    // With DoRA's detached norm the gradient deliberately ignores the norm's dependence on A and B, so only
    // x and the magnitudes can be compared with finite differences; "detachNorm": false checks A and B too.
    const detached = rt.config.type === 'dora' && rt.config.detachNorm;
    const checked = own.filter((o) => !detached || o.name.endsWith('magnitude_vector'));
    const res = await gradCheck(
      (t) => {
        const w = t.x!.graph.constant('float64', [p.out, p.in], w0);
        return rt.project(
          module,
          t.x!,
          (v) => linear(v, w),
          (name) => t[name]!,
        );
      },
      [
        { name: 'x', shape: [3, p.in] },
        ...own.map((o) => ({
          name: o.name,
          shape: o.shape,
          data: Float64Array.from(values.get(o.name)!),
          wrt: checked.includes(o),
        })),
      ],
    );
    expect(Object.keys(res.relativeError)).toHaveLength(checked.length + 1);
    expect(res.maxRelativeError).toBeLessThan(1e-6);
  });
});

describe('adapter runtime', () => {
  it('names tensors by HF module and marks gate tensors for their own learning rate', () => {
    const rt = runtimeFor({ type: 'moka', targetModules: ['q_proj'], plan: { count: 2 } });
    expect(rt.tensors.map((t) => t.name)).toContain('model.layers.1.self_attn.q_proj.moka_gate');
    expect(rt.tensors.find((t) => t.name.endsWith('moka_gate'))!.group).toBe('gate');
    expect(
      rt.tensors.filter((t) => t.group === 'default').every((t) => /moka_[AB]\.g\d+$/.test(t.name)),
    ).toBe(true);
  });

  it('initial values are deterministic in the seed and differ across seeds', () => {
    const cfg = parseAdapterConfig({ type: 'lora', r: 2 });
    const a = createAdapterRuntime(llama, cfg, { seed: 1 }).tensors[0]!.init;
    const b = createAdapterRuntime(llama, cfg, { seed: 1 }).tensors[0]!.init;
    const c = createAdapterRuntime(llama, cfg, { seed: 2 }).tensors[0]!.init;
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });

  it('with dropout, training graphs (given a seed) feed the update x·mask; without a seed there is no dropout', async () => {
    const rt = runtimeFor({ type: 'lora', targetModules: ['q_proj'], r: 2, dropout: 0.3 });
    const module = rt.modules[0]!;
    const values = randomValues(rt);
    const T = 5;
    const x = Float32Array.from(randomNormal(T * 16, rand));
    const run = async (seed: bigint | null) => {
      const g = new Graph('dropout');
      const w0 = g.weight('w0', 'float32', [16, 16], baseWeight(module, 16, 16));
      const xt = g.input('x', 'float32', [T, 16]);
      const st = g.input('seed', 'int64', []);
      const inputs = new Map<string, Tensor>();
      const tensor = (name: string) => {
        if (!inputs.has(name))
          inputs.set(name, g.input(name, 'float32', rt.tensors.find((t) => t.name === name)!.shape));
        return inputs.get(name)!;
      };
      const y = rt.project(module, xt, (v) => linear(v, w0), tensor, seed === null ? undefined : st);
      const s = new Session(g, { inputs: [xt, st, ...inputs.values()], outputs: { y } });
      const feeds: Record<string, Float32Array | BigInt64Array> = { x, seed: BigInt64Array.of(seed ?? 0n) };
      for (const name of inputs.keys()) feeds[name] = values.get(name)!;
      const out = (await s.run(feeds)).y!.data as Float32Array;
      await s.release();
      return out;
    };
    // Explicit: y = x·W0ᵀ + s·((x ⊙ mask)·Aᵀ)·Bᵀ with the mask of the reference generator.
    const mask = dropoutMaskReference(T * 16, 77n, 0.3, fnv1a(module));
    const a = values.get(`${module}.lora_A`)!;
    const b = values.get(`${module}.lora_B`)!;
    const w = baseWeight(module, 16, 16);
    const expected = new Float64Array(T * 16);
    for (let t = 0; t < T; t++)
      for (let o = 0; o < 16; o++) {
        let acc = 0;
        for (let i = 0; i < 16; i++) acc += x[t * 16 + i]! * w[o * 16 + i]!;
        let lora = 0;
        for (let r = 0; r < 2; r++) {
          let h = 0;
          for (let i = 0; i < 16; i++) h += x[t * 16 + i]! * mask[t * 16 + i]! * a[r * 16 + i]!;
          lora += h * b[o * 2 + r]!;
        }
        expected[t * 16 + o] = acc + rt.scale * lora;
      }
    expect(relErr(await run(77n), expected)).toBeLessThan(1e-5);
    const clean = mergeWeight(rt, module, w, values);
    expect(relErr(await run(null), explicitOutput(x, T, clean, 16, 16))).toBeLessThan(1e-5);
  });
});
