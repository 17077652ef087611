// NF4 codec: the code table, the decision tree (ties), absmax, bnb's high-nibble-first packing and edge cases.
// Byte-level expectations are exact (no tolerance): bnb compatibility is a bit pattern, not an approximation.
import { describe, expect, it } from 'vitest';
import { blockAbsmax } from '../../lib/quant/blockwise.ts';
import {
  NF4_CODE,
  NF4_MIDPOINTS,
  NF4_ZERO_CODE,
  dequantizeNf4,
  nf4Code,
  nf4CodeAt,
  nf4CodeFast,
  quantizeNf4,
} from '../../lib/quant/nf4.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';

function gaussian(n: number, seed: number, std = 1): Float32Array {
  return fillNormal(new Float32Array(n), mulberry32(seed), std);
}

/** The next float32 above / below x. */
function nextUp(x: number): number {
  const f = new Float32Array([x]);
  const u = new Int32Array(f.buffer);
  u[0] = x >= 0 ? u[0]! + 1 : u[0]! - 1;
  return f[0]!;
}
function nextDown(x: number): number {
  return -nextUp(-x);
}

describe('NF4 code table', () => {
  it('holds the 16 float32 values of bnb get_4bit_type("nf4"), in bnb code order', () => {
    const expected = [
      -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
      -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
      0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
      1.0,
    ];
    expect(Array.from(NF4_CODE)).toEqual(expected.map((v) => Math.fround(v)));
    // Asymmetric: 7 negative levels, an exact zero at code 7, 8 positive levels.
    expect(Array.from(NF4_CODE).filter((v) => v < 0)).toHaveLength(7);
    expect(NF4_CODE[NF4_ZERO_CODE]).toBe(0);
    expect(Array.from(NF4_CODE).filter((v) => v > 0)).toHaveLength(8);
  });

  it('has decision thresholds at the midpoints of neighbouring codes (to float32 precision)', () => {
    for (let i = 0; i < 15; i++) {
      expect(Math.abs(NF4_MIDPOINTS[i]! - (NF4_CODE[i]! + NF4_CODE[i + 1]!) / 2)).toBeLessThan(1e-7);
    }
  });

  it('maps every code value to its own code', () => {
    for (let i = 0; i < 16; i++) expect(nf4Code(NF4_CODE[i]!)).toBe(i);
  });

  it('sends an exact midpoint to the LOWER code and the next float32 above it to the upper one', () => {
    for (let i = 0; i < 15; i++) {
      const m = NF4_MIDPOINTS[i]!;
      expect(nf4Code(m)).toBe(i);
      expect(nf4Code(nextUp(m))).toBe(i + 1);
      expect(nf4Code(nextDown(m))).toBe(i);
    }
  });

  it('nf4CodeFast (bucket table) agrees with the tree everywhere: near every threshold and at random', () => {
    for (let i = 0; i < 15; i++) {
      let x = NF4_MIDPOINTS[i]!;
      for (let k = 0; k < 50; k++) x = nextDown(x);
      for (let k = 0; k < 100; k++, x = nextUp(x)) expect(nf4CodeFast(x)).toBe(nf4Code(x));
    }
    for (let b = 0; b <= 4096; b++) {
      const x = Math.fround(b / 2048 - 1);
      for (const y of [nextDown(x), x, nextUp(x)]) expect(nf4CodeFast(y)).toBe(nf4Code(y));
    }
    const rand = mulberry32(17);
    for (let k = 0; k < 200_000; k++) {
      const x = Math.fround(rand() * 2.2 - 1.1);
      if (nf4CodeFast(x) !== nf4Code(x)) expect(nf4CodeFast(x)).toBe(nf4Code(x));
    }
    for (const x of [NaN, -1e30, 1e30, 1.0000001, -1.0000001, 0, -0]) expect(nf4CodeFast(x)).toBe(nf4Code(x));
  });

  it('clamps out-of-range values to the end codes and sends NaN to code 0 (as the CUDA tree does)', () => {
    expect(nf4Code(1.5)).toBe(15);
    expect(nf4Code(-3)).toBe(0);
    expect(nf4Code(NaN)).toBe(0);
  });
});

describe('quantizeNf4', () => {
  it('packs two codes per byte, the first element in the HIGH nibble', () => {
    // Block 0 (absmax 2): element i is 2·code[i % 16], so its code is i % 16 and the bytes read 0x01 0x23 … 0xef.
    // Block 1 (absmax 0.5): codes counting down from 15.
    const values = new Float32Array(64);
    for (let i = 0; i < 32; i++) values[i] = 2 * NF4_CODE[i % 16]!;
    for (let i = 0; i < 32; i++) values[32 + i] = 0.5 * NF4_CODE[15 - (i % 16)]!;
    const w = quantizeNf4(values, [2, 32], { blockSize: 32 });
    expect(Array.from(w.absmax)).toEqual([2, 0.5]);
    const up = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    const down = [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];
    expect(Array.from(w.packed)).toEqual([...up, ...up, ...down, ...down]);
    expect(nf4CodeAt(w.packed, 0)).toBe(0);
    expect(nf4CodeAt(w.packed, 1)).toBe(1);
    // Every value is a level times its absmax, so the round trip is exact.
    expect(Array.from(dequantizeNf4(w))).toEqual(Array.from(values));
  });

  it('records per-block absmax in float32 (max |x|, sign ignored)', () => {
    const values = Float32Array.from([0.1, -3, 2, 0.5, -0.25, 0.125, 0, 0]);
    expect(Array.from(blockAbsmax(values, 4))).toEqual([3, 0.25].map(Math.fround));
  });

  it('breaks ties between two codes towards the lower code, end to end', () => {
    // absmax 1 (the last value), so the scaled values are the inputs: exact float32 midpoints.
    const values = new Float32Array(32);
    for (let i = 0; i < 15; i++) values[i] = NF4_MIDPOINTS[i]!;
    values[31] = 1;
    const w = quantizeNf4(values, [32], { blockSize: 32 });
    for (let i = 0; i < 15; i++) expect(nf4CodeAt(w.packed, i)).toBe(i);
  });

  it('quantizes an all-zero block to the zero code with absmax 0 and dequantizes it without NaN', () => {
    const values = new Float32Array(128);
    values.fill(0.3, 64); // block 1 is not zero, so only block 0 is degenerate
    const w = quantizeNf4(values, [128]);
    expect(w.absmax[0]).toBe(0);
    expect(Array.from(w.packed.subarray(0, 32)).every((b) => b === 0x77)).toBe(true);
    const back = dequantizeNf4(w);
    expect(back.subarray(0, 64).every((v) => v === 0)).toBe(true);
    expect(back.every((v) => Number.isFinite(v))).toBe(true);
  });

  it('keeps a single huge outlier exact and confines its damage to its own block', () => {
    const values = gaussian(256, 7, 0.01);
    values[70] = 1e6; // block 1 of 4
    const w = quantizeNf4(values, [256]);
    const back = dequantizeNf4(w);
    expect(w.absmax[1]).toBe(1e6);
    expect(back[70]).toBe(1e6);
    // The rest of block 1 collapses to 0 (their scaled values are ~1e-8, the zero code)…
    for (let i = 64; i < 128; i++) if (i !== 70) expect(back[i]).toBe(0);
    // …while the other blocks keep their usual ~9% relative error.
    for (const b of [0, 2, 3]) {
      let err = 0;
      let ref = 0;
      for (let i = b * 64; i < (b + 1) * 64; i++) {
        err += (values[i]! - back[i]!) ** 2;
        ref += values[i]! ** 2;
      }
      expect(Math.sqrt(err / ref)).toBeLessThan(0.2);
    }
  });

  it('handles a length that is not a multiple of the block size (own absmax for the partial block)', () => {
    const values = gaussian(100, 3);
    values[99] = 9; // only in the partial block
    const w = quantizeNf4(values, [100], { blockSize: 64 });
    expect(w.absmax).toHaveLength(2);
    expect(w.absmax[1]).toBe(9);
    expect(w.absmax[0]).toBe(Math.max(...Array.from(values.subarray(0, 64), Math.abs)));
    expect(w.packed).toHaveLength(50);
    expect(dequantizeNf4(w)[99]).toBe(9);
  });

  it('pads an odd-length tensor with the zero code in the last low nibble and drops it on dequantize', () => {
    const values = Float32Array.from({ length: 65 }, (_, i) => (i % 2 ? -1 : 1));
    const w = quantizeNf4(values, [5, 13], { blockSize: 64 });
    expect(w.packed).toHaveLength(33);
    expect(w.packed[32]! & 0x0f).toBe(NF4_ZERO_CODE);
    expect(w.packed[32]! >> 4).toBe(15); // element 64 = +1, alone in block 1
    const back = dequantizeNf4(w);
    expect(back).toHaveLength(65);
    expect(Array.from(back)).toEqual(Array.from(values));
  });

  it('lets blocks straddle rows (the tensor is blocked flat, row-major)', () => {
    const values = gaussian(3 * 40, 11);
    const flat = quantizeNf4(values, [120], { blockSize: 32 });
    const matrix = quantizeNf4(values, [3, 40], { blockSize: 32 });
    expect(matrix.packed).toEqual(flat.packed);
    expect(matrix.absmax).toEqual(flat.absmax);
    expect(matrix.shape).toEqual([3, 40]);
  });

  it('agrees byte for byte with the argmin reference (bnb default backend) on random data', () => {
    const values = gaussian(4096, 5);
    const w = quantizeNf4(values, [64, 64]);
    for (let i = 0; i < values.length; i++) {
      const inv = Math.fround(1 / w.absmax[Math.floor(i / 64)]!);
      const x = Math.fround(values[i]! * inv);
      let best = 0;
      for (let c = 1; c < 16; c++) if (Math.abs(x - NF4_CODE[c]!) < Math.abs(x - NF4_CODE[best]!)) best = c;
      expect(nf4CodeAt(w.packed, i)).toBe(best);
    }
  });

  it('rejects bad block sizes, shape mismatches and non-finite weights', () => {
    expect(() => quantizeNf4(new Float32Array(64), [64], { blockSize: 48 })).toThrow(
      /block size 48.*32, 64, 128/,
    );
    expect(() => quantizeNf4(new Float32Array(64), [8, 9])).toThrow(/72 elements but 64/);
    const bad = new Float32Array(64);
    bad[5] = NaN;
    expect(() => quantizeNf4(bad, [64])).toThrow(/index 5 is NaN/);
    bad[5] = Infinity;
    expect(() => quantizeNf4(bad, [64])).toThrow(/index 5 is Infinity/);
  });
});
