/**
 * Every engine op: forward against a plain TypeScript float64 reference (in float64, and in float32 where the
 * emitted kernels differ), and its VJP against central finite differences in float64.
 *
 * Tolerances: float64 forward 1e-10 relative (only summation order differs); float32 forward 1e-5 relative
 * (float32 rounding over ≤ 64-term sums); gradients 1e-6 relative as the issue requires (central differences
 * with ε = 1e-6 in float64 have truncation error ~ε² and rounding error ~1e-10).
 */
import { describe, expect, it } from 'vitest';
import {
  Graph,
  Session,
  abs,
  add,
  after,
  attention,
  cast,
  concat,
  crossEntropy,
  div,
  exp,
  expand,
  gather,
  log,
  logSoftmax,
  matmul,
  mul,
  neg,
  pow,
  reciprocal,
  reduceMax,
  reduceMean,
  reduceSum,
  reshape,
  rmsNorm,
  rope,
  rsqrt,
  sigmoid,
  silu,
  slice,
  softmax,
  split,
  sqrt,
  sub,
  tanh,
  transpose,
  where,
  equal,
  type Tensor,
} from '../../lib/engine/index.ts';
import { gradCheck, randomNormal, seededRandom, type CheckedInput } from '../../lib/engine/gradcheck.ts';
import * as R from './reference.ts';

type Inputs = Record<string, Tensor>;
interface Case {
  name: string;
  inputs: CheckedInput[];
  build: (t: Inputs) => Tensor;
  ref: (v: Record<string, R.ND>) => R.ND;
  /** Skip the float32 forward (ops whose float32 and float64 emission are the same). */
  float32?: boolean;
}

const rand = seededRandom(42);
const positive = (shape: number[]) =>
  Float64Array.from(
    randomNormal(
      shape.reduce((a, b) => a * b, 1),
      rand,
    ),
    (x) => Math.abs(x) + 0.5,
  );
const labels = (values: number[]) => BigInt64Array.from(values.map(BigInt));

function ndOf(spec: CheckedInput, data: Float64Array | BigInt64Array): R.ND {
  return R.nd(spec.shape, Array.from(data as ArrayLike<number | bigint>, Number));
}

/** Runs `build` on ORT with float inputs in `dtype`; returns the output as float64. */
async function runForward(
  c: Case,
  data: Record<string, Float64Array | BigInt64Array>,
  dtype: 'float32' | 'float64',
) {
  const g = new Graph(c.name);
  const ts: Inputs = {};
  const feeds: Record<string, Float32Array | Float64Array | BigInt64Array> = {};
  for (const s of c.inputs) {
    const d = data[s.name]!;
    if (d instanceof BigInt64Array) {
      ts[s.name] = g.input(s.name, 'int64', s.shape);
      feeds[s.name] = d;
    } else {
      ts[s.name] = g.input(s.name, dtype, s.shape);
      feeds[s.name] = dtype === 'float32' ? Float32Array.from(d) : d;
    }
  }
  const out = cast(c.build(ts), 'float64');
  const session = new Session(g, { inputs: Object.values(ts), outputs: { out } });
  const res = await session.run(feeds);
  await session.release();
  return { data: res.out!.data as Float64Array, dims: res.out!.dims };
}

const unary = (name: string, f: (t: Tensor) => Tensor, rf: (x: number) => number, pos = false): Case => ({
  name,
  inputs: [{ name: 'x', shape: [3, 4], data: pos ? positive([3, 4]) : undefined }],
  build: (t) => f(t.x!),
  ref: (v) => R.map(v.x!, rf),
});
const binary = (
  name: string,
  f: (a: Tensor, b: Tensor) => Tensor,
  rf: (a: number, b: number) => number,
  posB = false,
): Case => ({
  name,
  inputs: [
    { name: 'a', shape: [2, 3, 4], data: name === 'pow' ? positive([2, 3, 4]) : undefined },
    { name: 'b', shape: [3, 1], data: posB ? positive([3, 1]) : undefined },
  ],
  build: (t) => f(t.a!, t.b!),
  ref: (v) => R.broadcast2(v.a!, v.b!, rf),
});
const sig = (x: number) => 1 / (1 + Math.exp(-x));

const cases: Case[] = [
  binary('add', add, (a, b) => a + b),
  binary('sub', sub, (a, b) => a - b),
  binary('mul', mul, (a, b) => a * b),
  binary('div', div, (a, b) => a / b, true),
  binary('pow', pow, (a, b) => a ** b),
  unary('neg', neg, (x) => -x),
  unary('exp', exp, Math.exp),
  unary('log', log, Math.log, true),
  unary('sqrt', sqrt, Math.sqrt, true),
  unary('rsqrt', rsqrt, (x) => 1 / Math.sqrt(x), true),
  unary('reciprocal', reciprocal, (x) => 1 / x, true),
  unary('sigmoid', sigmoid, sig),
  unary('silu', silu, (x) => x * sig(x)),
  unary('tanh', tanh, Math.tanh),
  unary('abs', abs, Math.abs),
  {
    name: 'reduce_sum (axes 0,2, keepdims)',
    inputs: [{ name: 'x', shape: [2, 3, 4] }],
    build: (t) => reduceSum(t.x!, [0, 2], true),
    ref: (v) =>
      R.reduceRef(
        R.reduceRef(v.x!, 0, (a) => a.reduce((s, y) => s + y), true),
        2,
        (a) => a.reduce((s, y) => s + y),
        true,
      ),
  },
  {
    name: 'reduce_mean (last axis)',
    inputs: [{ name: 'x', shape: [2, 3, 4] }],
    build: (t) => reduceMean(t.x!, -1),
    ref: (v) => R.reduceRef(v.x!, 2, (a) => a.reduce((s, y) => s + y) / a.length),
  },
  {
    name: 'reduce_max (axis 1)',
    inputs: [{ name: 'x', shape: [2, 5, 3] }],
    build: (t) => reduceMax(t.x!, 1),
    ref: (v) => R.reduceRef(v.x!, 1, (a) => Math.max(...a)),
  },
  {
    name: 'reshape',
    inputs: [{ name: 'x', shape: [2, 3, 4] }],
    build: (t) => mul(reshape(t.x!, [6, -1]), reshape(t.x!, [6, 4])),
    ref: (v) => ({ shape: [6, 4], data: v.x!.data.map((y) => y * y) }),
  },
  {
    // An exact copy of x that waits for y (and z): the value and gradient of x, none to the dependencies.
    name: 'after (x waits for y and z)',
    inputs: [
      { name: 'x', shape: [2, 3, 4] },
      { name: 'y', shape: [5] },
      { name: 'z', shape: [2, 2] },
    ],
    build: (t) => mul(after(t.x!, [mul(t.y!, 2), t.z!]), t.x!),
    ref: (v) => ({ shape: [2, 3, 4], data: v.x!.data.map((y) => y * y) }),
  },
  {
    name: 'transpose',
    inputs: [{ name: 'x', shape: [2, 3, 4] }],
    build: (t) => transpose(t.x!, [2, 0, 1]),
    ref: (v) => R.transposeRef(v.x!, [2, 0, 1]),
  },
  {
    name: 'concat + split',
    inputs: [
      { name: 'a', shape: [2, 3] },
      { name: 'b', shape: [2, 2] },
    ],
    build: (t) => {
      const c = concat([t.a!, t.b!, t.a!], 1);
      const [p, q] = split(c, 1, [5, 3]);
      return mul(concat([q!, p!], 1), c);
    },
    ref: (v) => {
      const rows = [0, 1].map((r) => [
        ...v.a!.data.slice(r * 3, r * 3 + 3),
        ...v.b!.data.slice(r * 2, r * 2 + 2),
        ...v.a!.data.slice(r * 3, r * 3 + 3),
      ]);
      const out = rows.flatMap((c) => {
        const swapped = [...c.slice(5), ...c.slice(0, 5)];
        return swapped.map((y, i) => y * c[i]!);
      });
      return R.nd([2, 8], out);
    },
  },
  {
    name: 'slice',
    inputs: [{ name: 'x', shape: [3, 5] }],
    build: (t) => slice(t.x!, 1, 1, 4),
    ref: (v) =>
      R.nd(
        [3, 3],
        [0, 1, 2].flatMap((r) => Array.from(v.x!.data.slice(r * 5 + 1, r * 5 + 4))),
      ),
  },
  {
    name: 'expand',
    inputs: [{ name: 'x', shape: [3, 1] }],
    build: (t) => expand(t.x!, [2, 3, 4]),
    ref: (v) => R.broadcast2(v.x!, R.nd([2, 3, 4], new Array(24).fill(0)), (a) => a),
  },
  {
    name: 'gather (embedding lookup, repeated rows)',
    inputs: [
      { name: 'table', shape: [5, 3] },
      { name: 'idx', shape: [2, 3], data: labels([4, 0, 4, 2, 2, 1]) },
    ],
    build: (t) => gather(t.table!, t.idx!),
    ref: (v) =>
      R.nd(
        [2, 3, 3],
        Array.from(v.idx!.data).flatMap((i) => Array.from(v.table!.data.slice(i * 3, i * 3 + 3))),
      ),
  },
  {
    name: 'where (mask)',
    inputs: [
      { name: 'a', shape: [3, 4] },
      { name: 'b', shape: [4] },
    ],
    build: (t) => where(equal(cast(reshape(t.b!, [1, 4]), 'float64'), t.b!), t.a!, expand(t.b!, [3, 4])),
    ref: (v) => ({ shape: [3, 4], data: v.a!.data }),
  },
  ...(
    [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const
  ).map(
    ([ta, tb]): Case => ({
      name: `matmul 2-D transA=${ta} transB=${tb}`,
      inputs: [
        { name: 'a', shape: ta ? [5, 3] : [3, 5] },
        { name: 'b', shape: tb ? [4, 5] : [5, 4] },
      ],
      build: (t) => matmul(t.a!, t.b!, { transA: ta, transB: tb }),
      ref: (v) => R.matmulRef(v.a!, v.b!, ta, tb),
      float32: true,
    }),
  ),
  ...([false, true] as const).map(
    (tb): Case => ({
      name: `matmul batched with broadcast weight, transB=${tb}`,
      inputs: [
        { name: 'a', shape: [2, 3, 3, 5] },
        { name: 'b', shape: tb ? [3, 4, 5] : [3, 5, 4] },
      ],
      build: (t) => matmul(t.a!, t.b!, { transB: tb }),
      ref: (v) => R.matmulRef(v.a!, v.b!, false, tb),
      float32: true,
    }),
  ),
  ...(
    [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const
  ).flatMap(([ta, tb]): Case[] => [
    {
      name: `matmul, 2-D weight on the left broadcast over the batch, transA=${ta} transB=${tb}`,
      inputs: [
        { name: 'a', shape: ta ? [5, 3] : [3, 5] },
        { name: 'b', shape: tb ? [2, 3, 4, 5] : [2, 3, 5, 4] },
      ],
      build: (t) => matmul(t.a!, t.b!, { transA: ta, transB: tb }),
      ref: (v) => R.matmulRef(v.a!, v.b!, ta, tb),
    },
    {
      name: `matmul, 2-D weight on the right broadcast over the batch, transA=${ta} transB=${tb}`,
      inputs: [
        { name: 'a', shape: ta ? [2, 3, 5, 3] : [2, 3, 3, 5] },
        { name: 'b', shape: tb ? [4, 5] : [5, 4] },
      ],
      build: (t) => matmul(t.a!, t.b!, { transA: ta, transB: tb }),
      ref: (v) => R.matmulRef(v.a!, v.b!, ta, tb),
    },
  ]),
  {
    name: 'matmul batched, transA',
    inputs: [
      { name: 'a', shape: [2, 5, 3] },
      { name: 'b', shape: [2, 5, 4] },
    ],
    build: (t) => matmul(t.a!, t.b!, { transA: true }),
    ref: (v) => R.matmulRef(v.a!, v.b!, true, false),
    float32: true,
  },
  {
    name: 'softmax',
    inputs: [{ name: 'x', shape: [3, 5] }],
    build: (t) => softmax(t.x!),
    ref: (v) => R.rowsRef(v.x!, R.softmaxRow),
  },
  {
    name: 'log_softmax',
    inputs: [{ name: 'x', shape: [3, 5] }],
    build: (t) => logSoftmax(t.x!),
    ref: (v) => R.rowsRef(v.x!, (r) => R.softmaxRow(r).map(Math.log)),
  },
  {
    name: 'cross_entropy with ignored labels',
    inputs: [
      { name: 'logits', shape: [2, 3, 6] },
      { name: 'labels', shape: [2, 3], data: labels([1, -100, 5, 0, 0, -100]) },
    ],
    build: (t) => crossEntropy(t.logits!, t.labels!),
    ref: (v) => {
      let total = 0;
      let count = 0;
      Array.from(v.labels!.data).forEach((l, i) => {
        if (l === -100) return;
        const p = R.softmaxRow(v.logits!.data.slice(i * 6, i * 6 + 6));
        total -= Math.log(p[l]!);
        count++;
      });
      return R.nd([], [total / count]);
    },
  },
  ...(['sum', 'none'] as const).map(
    (reduction): Case => ({
      name: `cross_entropy, reduction ${reduction}`,
      inputs: [
        { name: 'logits', shape: [2, 3, 6] },
        { name: 'labels', shape: [2, 3], data: labels([1, -100, 5, 0, 0, -100]) },
      ],
      build: (t) => crossEntropy(t.logits!, t.labels!, { reduction }),
      ref: (v) => {
        const per = Array.from(v.labels!.data).map((l, i) =>
          l === -100 ? 0 : -Math.log(R.softmaxRow(v.logits!.data.slice(i * 6, i * 6 + 6))[l]!),
        );
        return reduction === 'none' ? R.nd([2, 3], per) : R.nd([], [per.reduce((a, b) => a + b, 0)]);
      },
      float32: true,
    }),
  ),
  {
    name: 'rms_norm',
    inputs: [
      { name: 'x', shape: [2, 3, 8] },
      { name: 'w', shape: [8] },
    ],
    build: (t) => rmsNorm(t.x!, t.w!, 1e-5),
    ref: (v) =>
      R.rowsRef(v.x!, (r) => {
        const ms = r.reduce((s, y) => s + y * y, 0) / r.length;
        return r.map((y, i) => (y / Math.sqrt(ms + 1e-5)) * v.w!.data[i]!);
      }),
    float32: true,
  },
  {
    name: 'rope (rotate_half)',
    inputs: [
      { name: 'x', shape: [1, 2, 3, 4] },
      { name: 'cos', shape: [3, 2], wrt: false },
      { name: 'sin', shape: [3, 2], wrt: false },
    ],
    build: (t) => rope(t.x!, t.cos!, t.sin!),
    ref: (v) => {
      const out = new Float64Array(24);
      for (let r = 0; r < 6; r++) {
        const s = r % 3;
        for (let i = 0; i < 2; i++) {
          const x1 = v.x!.data[r * 4 + i]!;
          const x2 = v.x!.data[r * 4 + i + 2]!;
          const c = v.cos!.data[s * 2 + i]!;
          const sn = v.sin!.data[s * 2 + i]!;
          out[r * 4 + i] = x1 * c - x2 * sn;
          out[r * 4 + i + 2] = x2 * c + x1 * sn;
        }
      }
      return { shape: [1, 2, 3, 4], data: out };
    },
  },
  {
    name: 'attention, causal, grouped-query (4 query heads on 2 kv heads)',
    inputs: [
      { name: 'q', shape: [2, 4, 3, 4] },
      { name: 'k', shape: [2, 2, 3, 4] },
      { name: 'v', shape: [2, 2, 3, 5] },
    ],
    build: (t) => attention(t.q!, t.k!, t.v!),
    ref: (v) => R.attentionRef(v.q!, v.k!, v.v!, true),
    float32: true,
  },
  {
    name: 'attention, one new query over a 4-position cache, padding mask',
    inputs: [
      { name: 'q', shape: [2, 2, 1, 4] },
      { name: 'k', shape: [2, 1, 4, 4] },
      { name: 'v', shape: [2, 1, 4, 4] },
      { name: 'mask', shape: [2, 1, 1, 4], data: Float64Array.from([0, 0, 0, 0, -1e9, 0, 0, 0]), wrt: false },
    ],
    build: (t) => attention(t.q!, t.k!, t.v!, { mask: t.mask! }),
    ref: (v) => R.attentionRef(v.q!, v.k!, v.v!, true, v.mask!),
    float32: true,
  },
];

describe('engine ops', () => {
  for (const c of cases) {
    describe(c.name, () => {
      const data: Record<string, Float64Array | BigInt64Array> = {};
      for (const s of c.inputs)
        data[s.name] =
          s.data ??
          randomNormal(
            s.shape.reduce((a, b) => a * b, 1),
            rand,
          );
      const expected = c.ref(Object.fromEntries(c.inputs.map((s) => [s.name, ndOf(s, data[s.name]!)])));

      it('forward matches the TypeScript reference in float64 (rel 1e-10)', async () => {
        const out = await runForward(c, data, 'float64');
        expect(out.dims).toEqual(expected.shape);
        expect(R.maxRelDiff(out.data, expected.data)).toBeLessThan(1e-10);
      });

      if (c.float32) {
        it('forward matches in float32 (rel 1e-5)', async () => {
          const out = await runForward(c, data, 'float32');
          expect(R.maxRelDiff(out.data, expected.data)).toBeLessThan(1e-5);
        });
      }

      it('gradient matches central finite differences in float64 (rel 1e-6)', async () => {
        const specs = c.inputs.map((s) => ({ ...s, data: data[s.name] }));
        const res = await gradCheck(c.build, specs);
        expect(Object.keys(res.relativeError).length).toBeGreaterThan(0);
        expect(res.maxRelativeError).toBeLessThan(1e-6);
      });
    });
  }
});
