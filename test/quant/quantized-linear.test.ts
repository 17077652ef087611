/**
 * A frozen 4-bit linear layer in engine graphs: forward equals x·deq(W)ᵀ (float32, rel < 1e-5: the only
 * difference is summation order), and the gradient to x passes finite differences (float64, rel < 1e-6).
 */
import { describe, expect, it } from 'vitest';
import { Graph, Session, grad, mul, reduceSum } from '../../lib/engine/index.ts';
import { gradCheck, randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import { quantizeNf4 } from '../../lib/quant/nf4.ts';
import { quantizeInt4 } from '../../lib/quant/int4.ts';
import { dequantizeToFloat32, type QuantizedWeight } from '../../lib/quant/quantized-weight.ts';
import { quantizedLinear, quantizedWeightTensors } from '../../lib/quant/quantized-linear.ts';

const rand = seededRandom(21);
const weight = (n: number, k: number) => Float32Array.from(randomNormal(n * k, rand, 0.2));

const CASES: [string, QuantizedWeight][] = [
  ['nf4, block 64', quantizeNf4(weight(8, 64), [8, 64], { blockSize: 64 })],
  [
    'nf4 + double quant, odd element count, partial last block',
    quantizeNf4(weight(5, 27), [5, 27], { blockSize: 32, doubleQuant: true }),
  ],
  [
    'int4 asymmetric, K not a multiple of the block, odd block count',
    quantizeInt4(weight(6, 40), [6, 40], { blockSize: 16 }),
  ],
  ['int4 symmetric', quantizeInt4(weight(4, 64), [4, 64], { blockSize: 32, symmetric: true })],
];

function shapeOf(w: QuantizedWeight): [number, number] {
  return w.format === 'nf4' ? (w.shape as [number, number]) : [w.n, w.k];
}

describe.each(CASES)('quantized linear: %s', (_name, w) => {
  const [n, k] = shapeOf(w);
  const deq = dequantizeToFloat32(w);

  it('forward equals x·deq(W)ᵀ and the input gradient equals dY·deq(W) (float32, rel < 1e-5)', async () => {
    const T = 7;
    const x = Float32Array.from(randomNormal(T * k, rand));
    const gy = Float32Array.from(randomNormal(T * n, rand));
    const g = new Graph('q');
    const xt = g.input('x', 'float32', [T, k]);
    const gyt = g.input('gy', 'float32', [T, n]);
    const y = quantizedLinear(xt, quantizedWeightTensors(g, 'w', w));
    const [dx] = grad(reduceSum(mul(y, gyt)), [xt]);
    const s = new Session(g, { inputs: [xt, gyt], outputs: { y, dx: dx! } });
    const out = await s.run({ x, gy });
    await s.release();
    const yRef = new Float64Array(T * n);
    const dxRef = new Float64Array(T * k);
    for (let t = 0; t < T; t++)
      for (let o = 0; o < n; o++)
        for (let i = 0; i < k; i++) {
          yRef[t * n + o]! += x[t * k + i]! * deq[o * k + i]!;
          dxRef[t * k + i]! += gy[t * n + o]! * deq[o * k + i]!;
        }
    const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let num = 0;
      let den = 0;
      for (let i = 0; i < b.length; i++) {
        num = Math.max(num, Math.abs(a[i]! - b[i]!));
        den = Math.max(den, Math.abs(b[i]!));
      }
      return num / den;
    };
    expect(rel(out.y!.data as Float32Array, yRef)).toBeLessThan(1e-5);
    expect(rel(out.dx!.data as Float32Array, dxRef)).toBeLessThan(1e-5);
  });

  it('gradient with respect to the input passes finite differences (float64, rel < 1e-6)', async () => {
    const res = await gradCheck(
      (t) => quantizedLinear(t.x!, quantizedWeightTensors(t.x!.graph, 'w', w)),
      [{ name: 'x', shape: [3, k] }],
    );
    expect(res.maxRelativeError).toBeLessThan(1e-6);
  });
});
