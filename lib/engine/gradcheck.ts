/**
 * Finite-difference gradient checking in float64. The function under test is reduced to a scalar with a
 * fixed random weighting L = Σ f(x) ⊙ R, so every output element's gradient is exercised; `grad` gives the
 * analytic gradients, central differences (L(x+ε) − L(x−ε)) / 2ε the numeric ones, both through ORT.
 */
import { grad } from './autodiff.ts';
import type { HostArray } from './dtype.ts';
import { Graph, type Tensor } from './graph.ts';
import { mul } from './ops/elementwise.ts';
import { reduceSum } from './ops/reduce.ts';
import { Session } from './session.ts';
import { bindShape } from './shape.ts';
import { mulberry32, randomNormal } from './random.ts';

export interface CheckedInput {
  name: string;
  shape: number[];
  /** Values; float64 random normal by default. Integer inputs (labels, indices) are never differentiated. */
  data?: Float64Array | BigInt64Array;
  /** Differentiate with respect to this input (default: true for float64 inputs). */
  wrt?: boolean;
}

export interface GradCheckResult {
  /** Per differentiated input: ‖analytic − numeric‖₂ / max(‖analytic‖₂, ‖numeric‖₂). */
  relativeError: Record<string, number>;
  maxRelativeError: number;
}

/** Seeded generators for test data (re-exported: tests build their inputs with these). */
export { mulberry32 as seededRandom, randomNormal } from './random.ts';

export async function gradCheck(
  build: (inputs: Record<string, Tensor>) => Tensor,
  inputs: readonly CheckedInput[],
  opts: { eps?: number; seed?: number; maxElementsPerInput?: number } = {},
): Promise<GradCheckResult> {
  const eps = opts.eps ?? 1e-6;
  const rand = mulberry32(opts.seed ?? 1);
  const g = new Graph('gradcheck');
  const tensors: Record<string, Tensor> = {};
  const values: Record<string, HostArray> = {};
  for (const spec of inputs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const isInt = spec.data instanceof BigInt64Array;
    tensors[spec.name] = g.input(spec.name, isInt ? 'int64' : 'float64', spec.shape);
    values[spec.name] = spec.data ?? randomNormal(n, rand);
  }
  const out = build(tensors);
  const outShape = bindShape(out.shape, new Map());
  const weights = g.constant(
    'float64',
    outShape,
    randomNormal(
      outShape.reduce((a, b) => a * b, 1),
      rand,
    ),
  );
  const loss = reduceSum(mul(out, weights));
  const wrt = inputs.filter((s) => s.wrt ?? !(s.data instanceof BigInt64Array));
  const grads = grad(
    loss,
    wrt.map((s) => tensors[s.name]!),
  );
  const feedsSpec = inputs.map((s) => tensors[s.name]!);
  const outputs: Record<string, Tensor> = { loss };
  wrt.forEach((s, i) => (outputs[`grad_${s.name}`] = grads[i]!));
  const analytic = new Session(g, { inputs: feedsSpec, outputs }, { intraOpThreads: 1 });
  const lossOnly = new Session(g, { inputs: feedsSpec, outputs: { loss } }, { intraOpThreads: 1 });
  try {
    const res = await analytic.run(values);
    const evalLoss = async () => ((await lossOnly.run(values)).loss!.data as Float64Array)[0]!;
    const relativeError: Record<string, number> = {};
    for (const s of wrt) {
      const a = res[`grad_${s.name}`]!.data as Float64Array;
      const x = values[s.name] as Float64Array;
      const count = Math.min(x.length, opts.maxElementsPerInput ?? 256);
      // Check a deterministic spread of elements when the input is large.
      const stride = x.length / count;
      let diff2 = 0;
      let a2 = 0;
      let n2 = 0;
      for (let k = 0; k < count; k++) {
        const i = Math.floor(k * stride);
        const orig = x[i]!;
        x[i] = orig + eps;
        const plus = await evalLoss();
        x[i] = orig - eps;
        const minus = await evalLoss();
        x[i] = orig;
        const numeric = (plus - minus) / (2 * eps);
        diff2 += (a[i]! - numeric) ** 2;
        a2 += a[i]! ** 2;
        n2 += numeric ** 2;
      }
      const scale = Math.max(Math.sqrt(a2), Math.sqrt(n2));
      relativeError[s.name] = scale === 0 ? 0 : Math.sqrt(diff2) / scale;
    }
    return { relativeError, maxRelativeError: Math.max(0, ...Object.values(relativeError)) };
  } finally {
    await analytic.release();
    await lossOnly.release();
  }
}
