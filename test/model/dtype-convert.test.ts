// float16 / bfloat16 ↔ float32 against known bit patterns. All comparisons are exact: these conversions are
// specified to the bit (IEEE 754 binary16, bfloat16 = top half of binary32, round to nearest even).
import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  decodeFloat32,
  encodeFloat32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  dtypeFromTorchName,
  parseFloatDtype,
  torchDtypeName,
} from '../../lib/model/dtype-convert.ts';

const f32 = (x: number) => Math.fround(x);

describe('float16 → float32', () => {
  it.each([
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x0400, 2 ** -14],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ])('bits %i → %s', (bits, value) => {
    expect(f16BitsToF32(bits)).toBe(value);
  });

  it('keeps the sign of zero and produces NaN for NaN patterns', () => {
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(Object.is(f16BitsToF32(0x0000), 0)).toBe(true);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0xfc01)).toBeNaN();
  });

  it('every finite half round-trips through float32 unchanged', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaN payloads are quietened
      if (f32ToF16Bits(f16BitsToF32(h)) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });
});

describe('float32 → float16 (round to nearest even)', () => {
  it.each([
    [1 / 3, 0x3555],
    [65504, 0x7bff],
    [65519, 0x7bff],
    [65520, 0x7c00], // halfway to 65536 rounds to even, which is Inf
    [1e9, 0x7c00],
    [-1e9, 0xfc00],
    [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 and 0x3c01 → even
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02 → even
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie → up
    [1e-8, 0x0000], // below half the smallest subnormal
    [3e-8, 0x0001],
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal → even (0)
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal ulps → even (2)
    [1023.5 * 2 ** -24, 0x0400], // largest subnormal + half ulp → carries into the smallest normal
    [-2, 0xc000],
  ])('%s → bits %i', (x, bits) => {
    expect(f32ToF16Bits(x)).toBe(bits);
  });

  it('signed zero, infinities and NaN', () => {
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(f32ToF16Bits(NaN) & 0x7e00).toBe(0x7e00);
  });
});

describe('bfloat16', () => {
  it.each([
    [0x3f80, 1],
    [0xc000, -2],
    [0x4049, 3.140625],
    [0x0001, 2 ** -133],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
  ])('bits %i → %s (a 16-bit left shift)', (bits, value) => {
    expect(bf16BitsToF32(bits)).toBe(value);
  });

  it.each([
    [Math.PI, 0x4049],
    [1 + 2 ** -8, 0x3f80], // tie → even
    [1 + 3 * 2 ** -8, 0x3f82], // tie → even
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [3.4028234663852886e38, 0x7f80], // max float rounds up to Inf
    [-0, 0x8000],
  ])('%s → bits %i', (x, bits) => {
    expect(f32ToBf16Bits(x)).toBe(bits);
  });

  it('NaN stays NaN', () => {
    expect(f32ToBf16Bits(NaN)).toBe(0x7fc0);
    expect(bf16BitsToF32(0x7fc0)).toBeNaN();
  });
});

describe('array conversions', () => {
  it('encode then decode gives the rounded values for every float dtype', () => {
    const values = new Float32Array([0, -0, 1, -2.5, Math.PI, 1e-6, 65504, -1e-30]);
    expect(decodeFloat32('F32', encodeFloat32('F32', values))).toEqual(values);
    expect(decodeFloat32('F64', encodeFloat32('F64', values))).toEqual(values);
    const bf = decodeFloat32('BF16', encodeFloat32('BF16', values));
    const h = decodeFloat32('F16', encodeFloat32('F16', values));
    for (let i = 0; i < values.length; i++) {
      expect(bf[i]).toBe(bf16BitsToF32(f32ToBf16Bits(values[i]!)));
      expect(h[i]).toBe(f16BitsToF32(f32ToF16Bits(values[i]!)));
    }
    expect(h[2]).toBe(1);
    expect(bf[3]).toBe(-2.5);
  });

  it('decodes bytes at an odd offset (unaligned views are copied)', () => {
    const raw = new Uint8Array(9);
    raw.set(encodeFloat32('F32', new Float32Array([f32(1.5), -3])), 1);
    expect([...decodeFloat32('F32', raw.subarray(1))]).toEqual([1.5, -3]);
  });

  it('refuses non-float dtypes and ragged byte counts', () => {
    expect(() => decodeFloat32('I32', new Uint8Array(4))).toThrow(/not a floating-point type/);
    expect(() => decodeFloat32('F16', new Uint8Array(3))).toThrow(/whole number/);
  });

  it('parses dtype spellings', () => {
    expect(parseFloatDtype('bf16')).toBe('BF16');
    expect(parseFloatDtype('bfloat16')).toBe('BF16');
    expect(parseFloatDtype('fp16')).toBe('F16');
    expect(parseFloatDtype('F32')).toBe('F32');
    expect(parseFloatDtype('int8')).toBeNull();
  });

  it('torch_dtype names round-trip exactly (no aliases, no inherited keys)', () => {
    for (const d of ['F32', 'F16', 'BF16', 'F64'] as const)
      expect(dtypeFromTorchName(torchDtypeName(d))).toBe(d);
    for (const bad of ['bf16', 'BF16', 'half', 'constructor', 'toString'])
      expect(dtypeFromTorchName(bad)).toBeNull();
  });
});
