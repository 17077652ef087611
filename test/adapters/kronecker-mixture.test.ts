/**
 * The fused MoKA update against its explicit form, its gradients against finite differences, and an end-to-end
 * fit through ONNX Runtime.
 */
import { describe, expect, it } from 'vitest';
import {
  Graph,
  Session,
  add,
  grad,
  linear,
  mul,
  reduceMean,
  sub,
  type Tensor,
} from '../../lib/engine/index.ts';
import { gradCheck, randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import {
  kroneckerMixture,
  materializedKroneckerDelta,
  mokaGate,
  type KroneckerGroup,
  type KroneckerShape,
} from '../../lib/adapters/kronecker-mixture.ts';

/** torch.kron(A, B) for row-major A [ma, na], B [mb, nb]. */
function kron(a: Float64Array, b: Float64Array, [ma, na, mb, nb]: KroneckerShape): Float64Array {
  const out = new Float64Array(ma * mb * na * nb);
  for (let p = 0; p < ma; p++)
    for (let q = 0; q < mb; q++)
      for (let i = 0; i < na; i++)
        for (let j = 0; j < nb; j++)
          out[(p * mb + q) * (na * nb) + i * nb + j] = a[p * na + i]! * b[q * nb + j]!;
  return out;
}

function softmaxVec(g: Float64Array): Float64Array {
  const m = Math.max(...g);
  const e = g.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

// A non-square 12 x 8 layer with mixed component shapes; the last group stacks two components.
const M = 12;
const N = 8;
const SHAPE_GROUPS: { shape: KroneckerShape; count: number }[] = [
  { shape: [3, 2, 4, 4], count: 1 },
  { shape: [6, 8, 2, 1], count: 1 },
  { shape: [2, 4, 6, 2], count: 2 },
];
const R_COMPONENTS = SHAPE_GROUPS.reduce((s, g) => s + g.count, 0);

function factorInputs(g: Graph, dtype: 'float32' | 'float64') {
  return SHAPE_GROUPS.map(({ shape, count }, i) => {
    const [ma, na, mb, nb] = shape;
    return {
      shape,
      a: g.input(`a${i}`, dtype, [count, ma, na]),
      b: g.input(`b${i}`, dtype, [count, mb, nb]),
    } satisfies KroneckerGroup;
  });
}

function randomFactors(rand: () => number) {
  const v: Record<string, Float64Array> = {};
  SHAPE_GROUPS.forEach(({ shape: [ma, na, mb, nb], count }, i) => {
    v[`a${i}`] = randomNormal(count * ma * na, rand);
    v[`b${i}`] = randomNormal(count * mb * nb, rand);
  });
  v.g = randomNormal(R_COMPONENTS, rand);
  return v;
}

/** Σ softmax(g)_i kron(A_i, B_i), explicitly. */
function explicitDelta(v: Record<string, Float64Array>): Float64Array {
  const alpha = softmaxVec(v.g!);
  const delta = new Float64Array(M * N);
  let c = 0;
  SHAPE_GROUPS.forEach(({ shape, count }, i) => {
    const [ma, na, mb, nb] = shape;
    for (let k = 0; k < count; k++, c++) {
      const kr = kron(
        v[`a${i}`]!.subarray(k * ma * na, (k + 1) * ma * na),
        v[`b${i}`]!.subarray(k * mb * nb, (k + 1) * mb * nb),
        shape,
      );
      kr.forEach((x, j) => (delta[j] += alpha[c]! * x));
    }
  });
  return delta;
}

describe('fused Kronecker mixture (MoKA update)', () => {
  const rand = seededRandom(7);
  const v = randomFactors(rand);
  const x = randomNormal(2 * 5 * N, rand); // [batch 2, seq 5, N]

  it.each(['per-token', 'flat-b', 'flat-a'] as const)(
    'equals x·(Σ softmax(g)_i kron(A_i, B_i))ᵀ computed explicitly, %s layout (float32, rel < 1e-5)',
    async (layout) => {
      const g = new Graph('moka-forward');
      const groups = factorInputs(g, 'float32');
      const gate = g.input('g', 'float32', [R_COMPONENTS]);
      const xt = g.input('x', 'float32', ['batch', 'seq', N]);
      const y = kroneckerMixture(xt, groups, mokaGate(gate), M, { layout });
      expect(y.shape).toEqual(['batch', 'seq', M]);
      const s = new Session(g, {
        inputs: [xt, gate, ...groups.flatMap((gr) => [gr.a, gr.b])],
        outputs: { y },
      });
      const feeds: Record<string, Float32Array | { data: Float32Array; dims: number[] }> = {};
      for (const [k, val] of Object.entries(v)) feeds[k] = Float32Array.from(val);
      feeds.x = { data: Float32Array.from(x), dims: [2, 5, N] };
      const out = (await s.run(feeds)).y!.data as Float32Array;
      await s.release();

      const delta = explicitDelta(v);
      let maxErr = 0;
      let maxRef = 0;
      for (let t = 0; t < 10; t++)
        for (let p = 0; p < M; p++) {
          let ref = 0;
          for (let j = 0; j < N; j++) ref += x[t * N + j]! * delta[p * N + j]!;
          maxErr = Math.max(maxErr, Math.abs(ref - out[t * M + p]!));
          maxRef = Math.max(maxRef, Math.abs(ref));
        }
      expect(maxErr / maxRef).toBeLessThan(1e-5);
    },
  );

  it('materialised ΔW equals the explicit Σ softmax(g)_i kron(A_i, B_i) (float64, rel < 1e-12)', async () => {
    const g = new Graph('moka-delta');
    const groups = factorInputs(g, 'float64');
    const gate = g.input('g', 'float64', [R_COMPONENTS]);
    const delta = materializedKroneckerDelta(groups, mokaGate(gate));
    expect(delta.shape).toEqual([M, N]);
    const s = new Session(g, { inputs: [gate, ...groups.flatMap((gr) => [gr.a, gr.b])], outputs: { delta } });
    const out = (await s.run(v)).delta!.data as Float64Array;
    await s.release();
    const ref = explicitDelta(v);
    const err = Math.max(...ref.map((r, i) => Math.abs(r - out[i]!)));
    expect(err / Math.max(...ref.map(Math.abs))).toBeLessThan(1e-12);
  });

  it.each(['per-token', 'flat-b', 'flat-a'] as const)(
    'gradients with respect to x, every factor and the gate logits pass finite differences, %s layout (rel < 1e-6)',
    async (layout) => {
      const inputs = [
        { name: 'x', shape: [3, N] },
        { name: 'g', shape: [R_COMPONENTS] },
        ...SHAPE_GROUPS.flatMap(({ shape: [ma, na, mb, nb], count }, i) => [
          { name: `a${i}`, shape: [count, ma, na] },
          { name: `b${i}`, shape: [count, mb, nb] },
        ]),
      ];
      const res = await gradCheck((t) => {
        const groups = SHAPE_GROUPS.map(({ shape }, i) => ({ shape, a: t[`a${i}`]!, b: t[`b${i}`]! }));
        return kroneckerMixture(t.x!, groups, mokaGate(t.g!), M, { layout });
      }, inputs);
      expect(Object.keys(res.relativeError)).toHaveLength(inputs.length);
      expect(res.maxRelativeError).toBeLessThan(1e-6);
    },
  );

  it('rejects component shapes that do not tile the layer, naming the group', () => {
    const g = new Graph('bad');
    const xt = g.input('x', 'float32', [4, N]);
    const a = g.input('a', 'float32', [1, 3, 2]);
    const b = g.input('b', 'float32', [1, 3, 4]);
    const gate = g.input('g', 'float32', [1]);
    expect(() => kroneckerMixture(xt, [{ shape: [3, 2, 3, 4], a, b }], gate, M)).toThrow(
      /group 0 with shape \[3,2,3,4\]: gives a 9x8 update, the layer is 12x8/,
    );
  });

  it('trains through ONNX Runtime: a frozen layer plus MoKA fits a realisable target update (loss ÷ ≥ 100)', async () => {
    // Target: y* = x·(W + ΔW*)ᵀ with ΔW* itself a MoKA update of the same shapes.
    const r = seededRandom(11);
    const target = randomFactors(r);
    const deltaStar = explicitDelta(target);
    const w0 = randomNormal(M * N, r, 0.5);
    const T = 64;
    const xs = randomNormal(T * N, r);
    const ys = new Float32Array(T * M);
    for (let t = 0; t < T; t++)
      for (let p = 0; p < M; p++) {
        let acc = 0;
        for (let j = 0; j < N; j++) acc += xs[t * N + j]! * (w0[p * N + j]! + deltaStar[p * N + j]!);
        ys[t * M + p] = acc;
      }

    const g = new Graph('moka-train');
    const weight = g.weight('w0', 'float32', [M, N], Float32Array.from(w0));
    const xt = g.input('x', 'float32', [T, N]);
    const yt = g.input('y', 'float32', [T, M]);
    const gate = g.input('g', 'float32', [R_COMPONENTS]);
    const groups = factorInputs(g, 'float32');
    const pred = add(linear(xt, weight), kroneckerMixture(xt, groups, mokaGate(gate), M));
    const err = sub(pred, yt);
    const loss = reduceMean(mul(err, err));
    const trainables: Tensor[] = [gate, ...groups.flatMap((gr) => [gr.a, gr.b])];
    const grads = grad(loss, trainables);
    const outputs: Record<string, Tensor> = { loss };
    trainables.forEach((t, i) => (outputs[`d_${t.name}`] = grads[i]!));
    const s = new Session(g, { inputs: [xt, yt, ...trainables], outputs }, { intraOpThreads: 1 });

    // Initialisation as MoKA documents it: A random, B zero (ΔW = 0), gate logits zero.
    const params: Record<string, Float32Array> = { g: new Float32Array(R_COMPONENTS) };
    SHAPE_GROUPS.forEach(({ shape: [ma, na, mb, nb], count }, i) => {
      params[`a${i}`] = Float32Array.from(randomNormal(count * ma * na, r, 0.5));
      params[`b${i}`] = new Float32Array(count * mb * nb);
    });
    // Adam in JS (the training issue moves the optimizer into the graph).
    const m1: Record<string, Float32Array> = {};
    const m2: Record<string, Float32Array> = {};
    for (const [k, p] of Object.entries(params)) {
      m1[k] = new Float32Array(p.length);
      m2[k] = new Float32Array(p.length);
    }
    const lr = 0.03;
    let first = 0;
    let last = 0;
    for (let step = 1; step <= 600; step++) {
      const out = await s.run({ x: Float32Array.from(xs), y: ys, ...params });
      last = (out.loss!.data as Float32Array)[0]!;
      if (step === 1) first = last;
      for (const [k, p] of Object.entries(params)) {
        const d = out[`d_${k}`]!.data as Float32Array;
        for (let i = 0; i < p.length; i++) {
          m1[k]![i] = 0.9 * m1[k]![i]! + 0.1 * d[i]!;
          m2[k]![i] = 0.999 * m2[k]![i]! + 0.001 * d[i]! * d[i]!;
          const mh = m1[k]![i]! / (1 - 0.9 ** step);
          const vh = m2[k]![i]! / (1 - 0.999 ** step);
          p[i] = p[i]! - (lr * mh) / (Math.sqrt(vh) + 1e-8);
        }
      }
    }
    await s.release();
    expect(first).toBeGreaterThan(0);
    expect(first / last).toBeGreaterThan(100);
  });
});
