import { describe, expect, it } from 'vitest';
import {
  divisorPairs,
  divisors,
  formatKroneckerShape,
  kroneckerMaxRank,
  kroneckerParamCount,
  kroneckerShapes,
  suggestKroneckerShape,
  validateKroneckerShape,
  type KroneckerShape,
} from '../../lib/adapters/kronecker-shapes.ts';
import { UserError } from '../../lib/errors.ts';

const q = { name: 'model.layers.3.self_attn.q_proj', out: 4096, in: 4096 };

describe('divisors and divisor pairs', () => {
  it('lists divisors ascending, including 1 and the number', () => {
    expect(divisors(1)).toEqual([1]);
    expect(divisors(12)).toEqual([1, 2, 3, 4, 6, 12]);
    expect(divisors(4096)).toEqual(Array.from({ length: 13 }, (_, i) => 2 ** i));
    // 11008 = 2^8·43 and 14336 = 2^11·7: the LLaMA 2 / LLaMA 3 intermediate sizes.
    expect(divisors(11008)).toHaveLength(18);
    expect(divisors(14336)).toHaveLength(24);
  });

  it('pairs every divisor with its cofactor', () => {
    expect(divisorPairs(12)).toEqual([
      [1, 12],
      [2, 6],
      [3, 4],
      [4, 3],
      [6, 2],
      [12, 1],
    ]);
    for (const [a, b] of divisorPairs(11008)) expect(a * b).toBe(11008);
  });

  it('rejects non-positive input as a programming error', () => {
    expect(() => divisors(0)).toThrow(RangeError);
  });
});

describe('component shapes', () => {
  it('enumerates every (m_a, n_a, m_b, n_b) tiling the layer', () => {
    const all = kroneckerShapes(4096, 4096);
    expect(all).toHaveLength(13 * 13);
    for (const [mA, nA, mB, nB] of all) {
      expect(mA * mB).toBe(4096);
      expect(nA * nB).toBe(4096);
    }
    expect(kroneckerShapes(11008, 4096)).toHaveLength(18 * 13);
  });

  it('can leave out dense shapes (a 1x1 factor makes ΔW a full matrix)', () => {
    const shapes = kroneckerShapes(4, 4, { excludeDense: true });
    expect(shapes).toHaveLength(9 - 2);
    expect(shapes).not.toContainEqual([1, 1, 4, 4]);
    expect(shapes).not.toContainEqual([4, 4, 1, 1]);
  });

  it('counts m_a·n_a + m_b·n_b parameters', () => {
    expect(kroneckerParamCount([64, 64, 64, 64])).toBe(8192);
    expect(kroneckerParamCount([86, 64, 128, 64])).toBe(13696);
  });

  it('bounds the rank by min(m_a,n_a)·min(m_b,n_b), never above min(m, n)', () => {
    expect(kroneckerMaxRank([64, 64, 64, 64])).toBe(4096);
    expect(kroneckerMaxRank([32, 128, 128, 32])).toBe(1024);
    // A 1×64 row times a 4096×64 block: a LoRA-like rank-64 update.
    expect(kroneckerMaxRank([1, 64, 4096, 64])).toBe(64);
    for (const s of kroneckerShapes(1024, 4096)) expect(kroneckerMaxRank(s)).toBeLessThanOrEqual(1024);
  });

  it('formats shapes as A ⊗ B', () => {
    expect(formatKroneckerShape([32, 64, 32, 64])).toBe('32x64 ⊗ 32x64');
  });
});

describe('validateKroneckerShape', () => {
  const message = (shape: KroneckerShape, layer = q, index = 2) => {
    try {
      validateKroneckerShape(shape, layer, index);
    } catch (err) {
      expect(err).toBeInstanceOf(UserError);
      return (err as Error).message;
    }
    return 'no error';
  };

  it('accepts shapes that tile the layer', () => {
    expect(message([64, 64, 64, 64])).toBe('no error');
  });

  it('names the layer, the component, what it gives and a fix', () => {
    expect(message([64, 64, 32, 64])).toBe(
      'model.layers.3.self_attn.q_proj [4096x4096]: component 2 shape [64,64,32,64] gives 2048x4096; ' +
        'm_a·m_b must equal 4096 (out_features) — try [64,64,64,64]',
    );
  });

  it('reports both sides when both are wrong', () => {
    const msg = message([64, 3, 32, 64], { name: 'model.layers.0.mlp.down_proj', out: 4096, in: 11008 }, 1);
    expect(msg).toContain('down_proj [4096x11008]: component 1');
    expect(msg).toContain(
      'm_a·m_b must equal 4096 (out_features) and n_a·n_b must equal 11008 (in_features)',
    );
    expect(msg).toMatch(/try \[64,\d+,64,\d+\]$/);
  });

  it('rejects non-integer factors', () => {
    expect(message([64, 64, 64.5, 64] as unknown as KroneckerShape)).toContain(
      'must be four positive integers',
    );
  });

  it('suggests shapes that are valid', () => {
    for (const bad of [
      [64, 64, 32, 64],
      [3, 5, 7, 11],
      [4096, 1, 2, 4096],
    ] as KroneckerShape[]) {
      const [mA, nA, mB, nB] = suggestKroneckerShape(bad, 11008, 4096);
      expect(mA * mB).toBe(11008);
      expect(nA * nB).toBe(4096);
    }
  });
});
