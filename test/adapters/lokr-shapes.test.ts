import { describe, expect, it } from 'vitest';
import {
  lokrFactors,
  lokrMaxRank,
  lokrParamCount,
  peftFactorization,
} from '../../lib/adapters/lokr-shapes.ts';

describe('peftFactorization (PEFT LoKr `factorization`)', () => {
  // The table of docs/reference moka-method.md §5, every cell.
  const table: Array<[number, [number, number], [number, number], [number, number], [number, number]]> = [
    [1024, [32, 32], [4, 256], [8, 128], [16, 64]],
    [2048, [32, 64], [4, 512], [8, 256], [16, 128]],
    [3072, [48, 64], [4, 768], [8, 384], [16, 192]],
    [4096, [64, 64], [4, 1024], [8, 512], [16, 256]],
    [8192, [64, 128], [4, 2048], [8, 1024], [16, 512]],
    [11008, [86, 128], [4, 2752], [8, 1376], [16, 688]],
    [14336, [112, 128], [4, 3584], [8, 1792], [16, 896]],
  ];
  it.each(table)('factorizes %i', (dim, f1, f4, f8, f16) => {
    expect(peftFactorization(dim)).toEqual(f1);
    expect(peftFactorization(dim, -1)).toEqual(f1);
    expect(peftFactorization(dim, 4)).toEqual(f4);
    expect(peftFactorization(dim, 8)).toEqual(f8);
    expect(peftFactorization(dim, 16)).toEqual(f16);
  });

  it('matches the PEFT docstring examples', () => {
    expect(peftFactorization(256, -1)).toEqual([16, 16]);
    expect(peftFactorization(128, -1)).toEqual([8, 16]);
    expect(peftFactorization(127, -1)).toEqual([1, 127]);
    expect(peftFactorization(128, 4)).toEqual([4, 32]);
  });

  it('keeps PEFT quirks: a dividing factor above √dim is returned unsorted', () => {
    expect(peftFactorization(1024, 64)).toEqual([64, 16]);
  });

  it('searches divisors up to a non-dividing factor', () => {
    expect(peftFactorization(11008, 3)).toEqual([2, 5504]);
    expect(peftFactorization(4096, 100)).toEqual([64, 64]);
    expect(peftFactorization(4096, 50)).toEqual([32, 128]);
  });
});

describe('lokrFactors', () => {
  it('gives w1 = out_l×in_m and w2 = out_k×in_n', () => {
    expect(lokrFactors(11008, 4096, { decomposeFactor: -1 })).toEqual({
      w1: [86, 64],
      w2: [128, 64],
      w1Rank: null,
      w2Rank: null,
    });
  });

  it('low-ranks w2 iff r < max(out_k, in_n)/2, and w1 only with decomposeBoth', () => {
    expect(lokrFactors(4096, 4096, { decomposeFactor: -1, r: 8 }).w2Rank).toBe(8);
    expect(lokrFactors(4096, 4096, { decomposeFactor: -1, r: 32 }).w2Rank).toBeNull();
    expect(lokrFactors(4096, 4096, { decomposeFactor: -1, r: 31 }).w2Rank).toBe(31);
    expect(lokrFactors(4096, 4096, { decomposeFactor: -1, r: 8 }).w1Rank).toBeNull();
    expect(lokrFactors(4096, 4096, { decomposeFactor: -1, r: 8, decomposeBoth: true }).w1Rank).toBe(8);
  });

  it('counts PEFT parameters for the Llama-3.2-3B benchmark layers (r=32, f=4)', () => {
    // q_proj: 4×4 + 768×32 + 32×768; v_proj: 4×4 + 256×32 + 32×768.
    expect(lokrParamCount(lokrFactors(3072, 3072, { decomposeFactor: 4, r: 32 }))).toBe(
      16 + 768 * 32 + 32 * 768,
    );
    expect(lokrParamCount(lokrFactors(1024, 3072, { decomposeFactor: 4, r: 32 }))).toBe(
      16 + 256 * 32 + 32 * 768,
    );
  });

  it('bounds the rank by rank(w1)·rank(w2)', () => {
    expect(lokrMaxRank(lokrFactors(4096, 4096, { decomposeFactor: -1 }))).toBe(4096);
    expect(lokrMaxRank(lokrFactors(4096, 4096, { decomposeFactor: -1, r: 8 }))).toBe(64 * 8);
  });
});
