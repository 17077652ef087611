/**
 * The explicit form of every adapter: ΔW materialised (in float64) and merged into a base weight. Used by
 * `moka merge`, ONNX export of merged models, and tests that check the fused training graphs against it.
 * Never used in training.
 */
import { UserError } from '../errors.ts';
import { kroneckerGroups, type AdapterRuntime } from './adapter-runtime.ts';

export type AdapterValues = ReadonlyMap<string, Float32Array>;

function get(values: AdapterValues, name: string): Float32Array {
  const v = values.get(name);
  if (!v) throw new UserError(`adapter values lack "${name}"`);
  return v;
}

function softmax(g: Float32Array): Float64Array {
  const m = Math.max(...g);
  const e = Float64Array.from(g, (x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** Adds c·kron(A, B) (A [ma, na], B [mb, nb], row-major, torch.kron convention) into delta [ma·mb, na·nb]. */
export function addKron(
  delta: Float64Array,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  [ma, na, mb, nb]: readonly [number, number, number, number],
  c: number,
): void {
  const cols = na * nb;
  for (let p = 0; p < ma; p++)
    for (let i = 0; i < na; i++) {
      const av = c * a[p * na + i]!;
      if (av === 0) continue;
      for (let q = 0; q < mb; q++) {
        const row = (p * mb + q) * cols + i * nb;
        for (let j = 0; j < nb; j++) delta[row + j]! += av * b[q * nb + j]!;
      }
    }
}

/** out = a·b for row-major a [m, k], b [k, n], in float64. */
function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let t = 0; t < k; t++) {
      const av = a[i * k + t]!;
      if (av === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j]! += av * b[t * n + j]!;
    }
  return out;
}

/** Mixture weights of a MoKA/MoKAs projection, as the graph computes them. */
function mixtureWeights(
  runtime: AdapterRuntime,
  module: string,
  r: number,
  values: AdapterValues,
): Float64Array {
  const cfg = runtime.config;
  if (cfg.type !== 'moka' && cfg.type !== 'mokas') throw new Error('internal');
  if (r === 1) return Float64Array.of(1);
  if (cfg.gate === 'none') return new Float64Array(r).fill(1 / r);
  if (cfg.gate === 'token') {
    throw new UserError(
      `${module}: a token-gated ${cfg.type} depends on the input and has no single ΔW; keep the adapter unmerged`,
    );
  }
  return softmax(get(values, `${module}.${cfg.type}_gate`));
}

/**
 * s·ΔW_i of every component of a MoKA/MoKAs projection (unweighted by the gate), in plan order; the single
 * factorised update for KronA and LoRA.
 */
export function componentDeltas(
  runtime: AdapterRuntime,
  module: string,
  values: AdapterValues,
): Float64Array[] {
  const p = runtime.projectionOf(module);
  if (!p) throw new UserError(`${module} is not adapted by this adapter`);
  const s = runtime.scale;
  const cfg = runtime.config;
  const fresh = () => new Float64Array(p.out * p.in);
  const v = (suffix: string) => get(values, `${module}.${suffix}`);
  switch (cfg.type) {
    case 'moka': {
      const deltas = p.components.map(fresh);
      const groups = kroneckerGroups(p.components);
      groups.forEach((g, gi) => {
        const [ma, na, mb, nb] = g.shape;
        const a = v(`moka_A.g${gi}`);
        const b = v(`moka_B.g${gi}`);
        g.indices.forEach((ci, k) =>
          addKron(
            deltas[ci]!,
            a.subarray(k * ma * na, (k + 1) * ma * na),
            b.subarray(k * mb * nb, (k + 1) * mb * nb),
            g.shape,
            s,
          ),
        );
      });
      return deltas;
    }
    case 'mokas':
      return p.components.map((c, i) => {
        if (c.kind !== 'block-diagonal') throw new Error('internal');
        const d = fresh();
        const [bm, bn] = c.blockShape;
        addKron(d, identity(c.blocks), v(`mokas_B.${i}`), [c.blocks, c.blocks, bm, bn], s);
        return d;
      });
    case 'krona': {
      const c = p.components[0]!;
      if (c.kind !== 'lokr') throw new Error('internal');
      const { w1, w2, w1Rank, w2Rank } = c.factors;
      const w1v =
        w1Rank === null ? v('lokr_w1') : matmul(v('lokr_w1_a'), v('lokr_w1_b'), w1[0], w1Rank, w1[1]);
      const w2v =
        w2Rank === null ? v('lokr_w2') : matmul(v('lokr_w2_a'), v('lokr_w2_b'), w2[0], w2Rank, w2[1]);
      const d = fresh();
      addKron(d, w1v, w2v, [w1[0], w1[1], w2[0], w2[1]], s);
      return [d];
    }
    case 'lora':
    case 'dora': {
      const ba = matmul(v('lora_B'), v('lora_A'), p.out, cfg.r, p.in);
      return [ba.map((x) => s * x)];
    }
  }
}

/** ΔW [out·in] of one adapted projection (not DoRA, which rescales the whole weight: use mergeWeight). */
export function adapterDelta(runtime: AdapterRuntime, module: string, values: AdapterValues): Float64Array {
  const cfg = runtime.config;
  if (cfg.type === 'dora')
    throw new UserError('DoRA rescales the whole weight; use mergeWeight with the base weight');
  const parts = componentDeltas(runtime, module, values);
  if (parts.length === 1 && cfg.type !== 'moka' && cfg.type !== 'mokas') return parts[0]!;
  const alpha = mixtureWeights(runtime, module, parts.length, values);
  const delta = new Float64Array(parts[0]!.length);
  parts.forEach((d, i) => {
    for (let j = 0; j < d.length; j++) delta[j]! += alpha[i]! * d[j]!;
  });
  return delta;
}

function identity(n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = 1;
  return out;
}

/** The merged weight W0 + ΔW (DoRA: diag(m / ‖W0 + sBA‖_row)·(W0 + sBA)), as float32 [out·in]. */
export function mergeWeight(
  runtime: AdapterRuntime,
  module: string,
  w0: Float32Array,
  values: AdapterValues,
): Float32Array {
  const p = runtime.projectionOf(module);
  if (!p) return w0;
  if (w0.length !== p.out * p.in) {
    throw new UserError(
      `${module}: base weight has ${w0.length} values, the adapter expects ${p.out}x${p.in}`,
    );
  }
  if (runtime.config.type !== 'dora') {
    const delta = adapterDelta(runtime, module, values);
    return Float32Array.from(w0, (w, i) => w + delta[i]!);
  }
  const [sba] = componentDeltas(runtime, module, values);
  const magnitude = get(values, `${module}.lora_magnitude_vector`);
  const out = new Float32Array(w0.length);
  for (let row = 0; row < p.out; row++) {
    let norm2 = 0;
    const combined = new Float64Array(p.in);
    for (let j = 0; j < p.in; j++) {
      combined[j] = w0[row * p.in + j]! + sba![row * p.in + j]!;
      norm2 += combined[j]! ** 2;
    }
    const c = magnitude[row]! / Math.sqrt(norm2);
    for (let j = 0; j < p.in; j++) out[row * p.in + j] = c * combined[j]!;
  }
  return out;
}
