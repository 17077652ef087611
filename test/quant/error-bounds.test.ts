// Round-trip error on Gaussian weights, the figures docs/quantization.md states. 256 × 1024 N(0, 1) values
// (262,144): the sampling spread of a relative Frobenius error at this size is ≈ 3e-4, so the ±2e-3 windows
// below catch a real change in the codec while never flaking. Expected values: measured at 4096 × 4096; the
// derivation in docs/quantization.md predicts them to within 0.2% (NF4) and 1.5% (int4).
import { describe, expect, it } from 'vitest';
import { quantizeInt4 } from '../../lib/quant/int4.ts';
import { quantizeNf4 } from '../../lib/quant/nf4.ts';
import { dequantizeRows } from '../../lib/quant/quantized-weight.ts';
import { ErrorAccumulator, reconstructionError } from '../../lib/quant/reconstruction-error.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';

const ROWS = 256;
const COLS = 1024;
const values = fillNormal(new Float32Array(ROWS * COLS), mulberry32(2024));
const TOL = 2e-3;

describe('quantize → dequantize error on N(0, 1) weights (relative Frobenius)', () => {
  it.each([
    [32, 0.0873],
    [64, 0.092],
    [128, 0.0956],
  ])('NF4 block %i ≈ %f', (blockSize, expected) => {
    const e = reconstructionError(values, quantizeNf4(values, [ROWS, COLS], { blockSize }));
    expect(Math.abs(e.relativeFrobenius - expected)).toBeLessThan(TOL);
  });

  it('NF4 block 64 with double quantization adds < 0.1% relative', () => {
    const plain = reconstructionError(values, quantizeNf4(values, [ROWS, COLS])).relativeFrobenius;
    const dq = reconstructionError(values, quantizeNf4(values, [ROWS, COLS], { doubleQuant: true }));
    expect(dq.relativeFrobenius - plain).toBeGreaterThanOrEqual(-1e-4);
    expect(dq.relativeFrobenius - plain).toBeLessThan(1e-3);
  });

  it.each([
    [32, true, 0.0859],
    [32, false, 0.0808],
    [64, true, 0.0949],
    [64, false, 0.091],
    [128, false, 0.1005],
  ])('int4 block %i symmetric=%s ≈ %f', (blockSize, symmetric, expected) => {
    const e = reconstructionError(values, quantizeInt4(values, [ROWS, COLS], { blockSize, symmetric }));
    expect(Math.abs(e.relativeFrobenius - expected)).toBeLessThan(TOL);
  });

  it('scales with the weights: N(0, 0.02²) gives the same relative error as N(0, 1)', () => {
    const small = values.map((v) => v * 0.02);
    const a = reconstructionError(values, quantizeNf4(values, [ROWS, COLS])).relativeFrobenius;
    const b = reconstructionError(small, quantizeNf4(small, [ROWS, COLS])).relativeFrobenius;
    expect(Math.abs(a - b)).toBeLessThan(1e-4);
  });
});

describe('ErrorAccumulator', () => {
  it('gives the same totals over any split into slices, and the edge cases of an all-zero original', () => {
    const original = fillNormal(new Float32Array(1000), mulberry32(3));
    const w = quantizeNf4(original, [10, 100]);
    const whole = reconstructionError(original, w);
    const deq = new Float32Array(1000);
    dequantizeRows(w, deq, 0, 10);
    const acc = new ErrorAccumulator();
    for (const [a, b] of [
      [0, 300],
      [300, 301],
      [301, 1000],
    ]) {
      acc.add(original.subarray(a, b), deq.subarray(a, b));
    }
    const sliced = acc.result();
    expect(sliced.maxAbs).toBe(whole.maxAbs);
    expect(sliced.frobenius).toBeCloseTo(whole.frobenius, 12);
    expect(sliced.relativeFrobenius).toBeCloseTo(whole.relativeFrobenius, 12);

    const zeros = new ErrorAccumulator();
    zeros.add(new Float32Array(4), new Float32Array(4));
    expect(zeros.result()).toEqual({ relativeFrobenius: 0, maxAbs: 0, frobenius: 0 });
    zeros.add(new Float32Array(1), Float32Array.of(0.5));
    expect(zeros.result()).toEqual({ relativeFrobenius: Infinity, maxAbs: 0.5, frobenius: 0 });
    expect(() => zeros.add(new Float32Array(2), new Float32Array(3))).toThrow(RangeError);
  });
});
