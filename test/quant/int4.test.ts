// int4 in the MatMulNBits layout: scale/zero-point rules, low-nibble-first bytes, per-row block padding, the
// DequantizeLinear-21 conversion, serialization, and round-trip error bounds. Exact expectations are exact.
import { describe, expect, it } from 'vitest';
import {
  dequantizeInt4,
  int4CodeAt,
  int4ZeroPoint,
  matMulNBitsSpec,
  quantizeInt4,
} from '../../lib/quant/int4.ts';
import { ONNX_INT4, ONNX_UINT4, toDequantizeLinearInt4 } from '../../lib/quant/int4-dequantize-linear.ts';
import { int4FromTensors, int4ToTensors } from '../../lib/quant/int4-serialization.ts';
import { tensorSourceOf } from '../../lib/quant/quant-tensor.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';

describe('quantizeInt4 (asymmetric)', () => {
  it('packs the first value of each pair in the LOW nibble, blocks along K per row', () => {
    // One row, two blocks of 16. Block 0 = (j − 3)·0.5: min −1.5, max 6 → scale 0.5, zp 3, q_j = j.
    // Block 1 = −(j)·0.25: min −3.75, max 0 → scale 0.25, zp 15, q_j = 15 − j.
    const values = new Float32Array(32);
    for (let j = 0; j < 16; j++) values[j] = (j - 3) * 0.5;
    for (let j = 0; j < 16; j++) values[16 + j] = 0 - j * 0.25;
    const w = quantizeInt4(values, [1, 32], { blockSize: 16 });
    expect(Array.from(w.scales)).toEqual([0.5, 0.25]);
    expect(Array.from(w.zeroPoints!)).toEqual([3 | (15 << 4)]);
    expect(Array.from(w.packed)).toEqual([
      0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01,
    ]);
    expect(int4CodeAt(w, 0, 5)).toBe(5);
    expect(int4ZeroPoint(w, 0, 1)).toBe(15);
    expect(Array.from(dequantizeInt4(w))).toEqual(Array.from(values));
  });

  it('pads each row to whole blocks with the zero point, and an odd block count with an 8 nibble', () => {
    // K = 20, block 16: 2 blocks per row, the second holds 4 values and 12 padding nibbles.
    const values = fillNormal(new Float32Array(3 * 20), mulberry32(2));
    const w = quantizeInt4(values, [3, 20], { blockSize: 16 });
    expect(w.packed).toHaveLength(3 * 2 * 8);
    for (let row = 0; row < 3; row++) {
      const zp = int4ZeroPoint(w, row, 1);
      const block = w.packed.subarray((row * 2 + 1) * 8, (row * 2 + 2) * 8);
      for (let b = 2; b < 8; b++) expect(block[b]).toBe(zp | (zp << 4));
    }
    const odd = quantizeInt4(fillNormal(new Float32Array(2 * 48), mulberry32(3)), [2, 48], { blockSize: 16 });
    expect(odd.zeroPoints).toHaveLength(4); // [2, ceil(3/2)]
    expect(odd.zeroPoints![1]! >> 4).toBe(8);
    expect(odd.zeroPoints![3]! >> 4).toBe(8);
  });

  it('keeps the error of every value within half a quantization step', () => {
    const values = fillNormal(new Float32Array(64 * 96), mulberry32(5));
    const w = quantizeInt4(values, [64, 96], { blockSize: 32 });
    const back = dequantizeInt4(w);
    for (let i = 0; i < values.length; i++) {
      const scale = w.scales[Math.floor(i / 96) * 3 + Math.floor((i % 96) / 32)]!;
      expect(Math.abs(values[i]! - back[i]!)).toBeLessThanOrEqual(scale / 2 + 1e-6);
    }
  });
});

describe('quantizeInt4 (symmetric)', () => {
  it('uses scale = (signed value of largest magnitude) / −8 and zero point 8, so that value is exact', () => {
    const values = Float32Array.from({ length: 16 }, (_, j) => (j === 3 ? -4 : (j - 8) * 0.25));
    const w = quantizeInt4(values, [1, 16], { blockSize: 16, symmetric: true });
    expect(w.zeroPoints).toBeNull();
    expect(Array.from(w.scales)).toEqual([0.5]);
    expect(int4CodeAt(w, 0, 3)).toBe(0); // −4 / 0.5 + 8
    expect(dequantizeInt4(w)[3]).toBe(-4);
    // A positive extreme gives a negative scale: q = 0 decodes to +M.
    const pos = quantizeInt4(
      Float32Array.from({ length: 16 }, (_, j) => (j === 0 ? 2 : 0.1)),
      [1, 16],
      {
        blockSize: 16,
        symmetric: true,
      },
    );
    expect(pos.scales[0]).toBe(-0.25);
    expect(dequantizeInt4(pos)[0]).toBe(2);
  });

  it('bounds every error by one step (the side opposite the extreme has 7 levels, not 8)', () => {
    const values = fillNormal(new Float32Array(32 * 64), mulberry32(6));
    const w = quantizeInt4(values, [32, 64], { blockSize: 64, symmetric: true });
    const back = dequantizeInt4(w);
    for (let i = 0; i < values.length; i++) {
      expect(Math.abs(values[i]! - back[i]!)).toBeLessThanOrEqual(
        Math.abs(w.scales[Math.floor(i / 64)]!) + 1e-6,
      );
    }
  });

  it('quantizes an all-zero block to zero without NaN', () => {
    const w = quantizeInt4(new Float32Array(32), [2, 16], { blockSize: 16, symmetric: true });
    expect(Array.from(dequantizeInt4(w)).every((v) => v === 0)).toBe(true);
    const a = quantizeInt4(new Float32Array(32), [2, 16], { blockSize: 16 });
    expect(Array.from(dequantizeInt4(a)).every((v) => v === 0)).toBe(true);
  });
});

describe('int4 validation and layout helpers', () => {
  it('rejects block sizes that are not powers of two in 16..256 and non-2-D shapes', () => {
    for (const bs of [8, 24, 512]) {
      expect(() => quantizeInt4(new Float32Array(64), [2, 32], { blockSize: bs })).toThrow(
        /power of two from 16/,
      );
    }
    expect(() => quantizeInt4(new Float32Array(64), [64])).toThrow(/2-D/);
    expect(() => quantizeInt4(Float32Array.from([NaN, 0]), [1, 2], { blockSize: 16 })).toThrow(
      /index 0 is NaN/,
    );
  });

  it('describes the MatMulNBits node (accuracy_level 0)', () => {
    const w = quantizeInt4(new Float32Array(24 * 80), [24, 80], { blockSize: 32 });
    expect(matMulNBitsSpec(w)).toEqual({
      attributes: { K: 80, N: 24, bits: 4, block_size: 32, accuracy_level: 0 },
      bDims: [24, 3, 16],
      scalesDims: [72],
      zeroPointsDims: [24, 2],
    });
  });

  it('converts to DequantizeLinear-21: flat low-first packing, INT4 = q − 8 for symmetric, UINT4 + zp otherwise', () => {
    const values = fillNormal(new Float32Array(3 * 20), mulberry32(8));
    for (const symmetric of [true, false]) {
      const w = quantizeInt4(values, [3, 20], { blockSize: 16, symmetric });
      const dq = toDequantizeLinearInt4(w);
      expect(dq.dataType).toBe(symmetric ? ONNX_INT4 : ONNX_UINT4);
      expect(dq.data).toHaveLength(30);
      expect(dq.scaleDims).toEqual([3, 2]);
      const deq = dequantizeInt4(w);
      for (let i = 0; i < 60; i++) {
        const nib = (dq.data[i >> 1]! >> ((i & 1) * 4)) & 0xf;
        const q = symmetric ? (nib >= 8 ? nib - 16 : nib) : nib;
        const kb = Math.floor((i % 20) / 16);
        const row = Math.floor(i / 20);
        const zi = row * 2 + kb;
        const zp = dq.zeroPoint ? (dq.zeroPoint[zi >> 1]! >> ((zi & 1) * 4)) & 0xf : 0;
        expect(Math.fround((q - zp) * dq.scale[zi]!)).toBe(deq[i]);
      }
    }
  });

  it('round-trips through its checkpoint tensors', async () => {
    const values = fillNormal(new Float32Array(12 * 40), mulberry32(9));
    for (const symmetric of [true, false]) {
      const w = quantizeInt4(values, [12, 40], { blockSize: 16, symmetric, dtype: 'BF16' });
      const tensors = int4ToTensors('x.weight', w);
      expect(tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
        ['x.weight', 'U8', [12, 3, 8]],
        ['x.weight.scales', 'F32', [12, 3]],
        ...(symmetric ? [] : [['x.weight.zero_points', 'U8', [12, 2]]]),
        ['x.weight.quant_state.moka__int4', 'U8', [tensors.at(-1)!.bytes.length]],
      ]);
      const back = await int4FromTensors('x.weight', tensorSourceOf(tensors), 'test');
      expect(back).toEqual(w);
    }
  });
});
