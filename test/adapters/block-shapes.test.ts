import { describe, expect, it } from 'vitest';
import {
  blockCounts,
  blockMaxRank,
  blockParamCount,
  blockShape,
  formatBlockComponent,
  validateBlockCounts,
} from '../../lib/adapters/block-shapes.ts';

const down = { name: 'model.layers.0.mlp.down_proj', out: 4096, in: 11008 };

describe('MoKAs block shapes', () => {
  it('lists block counts that divide both sides, without a = 1', () => {
    expect(blockCounts(4096, 11008)).toEqual([2, 4, 8, 16, 32, 64, 128, 256]);
    expect(blockCounts(1024, 4096)).toHaveLength(10);
    expect(blockCounts(7, 5)).toEqual([]);
  });

  it('counts m·n/a² parameters and reaches full rank', () => {
    expect(blockShape(4096, 4096, 64)).toEqual([64, 64]);
    expect(blockParamCount(4096, 4096, 64)).toBe(4096);
    expect(blockParamCount(1024, 4096, 32)).toBe(32 * 128);
    expect(blockMaxRank(1024, 4096)).toBe(1024);
    expect(formatBlockComponent(4096, 4096, 32)).toBe('I_32 ⊗ 128x128');
  });

  it('validates block counts against the layer, naming it and the valid counts', () => {
    expect(() => validateBlockCounts([32, 64], down)).not.toThrow();
    expect(() => validateBlockCounts([32, 3], down)).toThrow(
      'model.layers.0.mlp.down_proj [4096x11008]: MoKAs component 2 block count 3 does not divide both 4096 and 11008; valid block counts: 2, 4, 8, 16, 32, 64, 128, 256',
    );
    expect(() => validateBlockCounts([512], down)).toThrow(/block count 512 does not divide/);
    expect(() => validateBlockCounts([1], down)).toThrow(/dense 4096x11008 matrix \(full fine-tuning\)/);
    expect(() => validateBlockCounts([32, 32], down)).toThrow(/repeated.*I_a⊗B1 \+ I_a⊗B2/);
  });
});
