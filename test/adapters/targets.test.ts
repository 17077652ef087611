import { describe, expect, it } from 'vitest';
import {
  parseLayerList,
  parseTargetModules,
  projectionModuleName,
  resolveTargets,
} from '../../lib/adapters/targets.ts';
import { loadFixture } from './fixtures.ts';

const llama3 = loadFixture('llama-3-8b');

describe('target selection', () => {
  it('lists every targeted (layer, projection) with its [out, in] shape', () => {
    const targets = resolveTargets(llama3, {
      targetModules: ['q_proj', 'v_proj'],
      layersToTransform: [3, 1],
    });
    expect(targets).toEqual([
      { layer: 1, projection: 'q_proj', name: 'model.layers.1.self_attn.q_proj', out: 4096, in: 4096 },
      { layer: 1, projection: 'v_proj', name: 'model.layers.1.self_attn.v_proj', out: 1024, in: 4096 },
      { layer: 3, projection: 'q_proj', name: 'model.layers.3.self_attn.q_proj', out: 4096, in: 4096 },
      { layer: 3, projection: 'v_proj', name: 'model.layers.3.self_attn.v_proj', out: 1024, in: 4096 },
    ]);
  });

  it('defaults to all layers; all-linear means all seven projections', () => {
    const targets = resolveTargets(llama3, { targetModules: parseTargetModules('all-linear') });
    expect(targets).toHaveLength(32 * 7);
    expect(targets.at(-1)).toMatchObject({ name: 'model.layers.31.mlp.down_proj', out: 4096, in: 14336 });
  });

  it('rejects unknown projections, listing valid names', () => {
    expect(() => parseTargetModules('q_proj,gate')).toThrow(
      'unknown target module "gate" (did you mean "gate_proj"?); valid: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (or "all-linear")',
    );
    expect(() => parseTargetModules(['self_attn.q_proj'])).toThrow('(did you mean "q_proj"?)');
    expect(() => parseTargetModules([])).toThrow('target modules are empty');
    expect(() => parseTargetModules(['all-linear', 'q_proj'])).toThrow('cannot be combined');
  });

  it('rejects out-of-range layers, naming the valid range', () => {
    expect(() => resolveTargets(llama3, { targetModules: ['q_proj'], layersToTransform: [0, 32] })).toThrow(
      'layer 32 does not exist: this model has 32 layers, valid indices are 0-31',
    );
    expect(() => resolveTargets(llama3, { targetModules: ['q_proj'], layersToTransform: [] })).toThrow(
      'layersToTransform is empty',
    );
  });

  it('parses CLI layer lists with ranges', () => {
    expect(parseLayerList('0,1,2')).toEqual([0, 1, 2]);
    expect(parseLayerList('0-3, 8')).toEqual([0, 1, 2, 3, 8]);
    expect(() => parseLayerList('a')).toThrow('"a" is not a layer index or range');
    expect(() => parseLayerList('5-2')).toThrow('write 2-5');
    // A typo must fail at once, not expand into billions of indices.
    expect(() => parseLayerList('0-99999999999')).toThrow('goes past layer 9999');
  });

  it('names modules as Hugging Face does', () => {
    expect(projectionModuleName(3, 'gate_proj')).toBe('model.layers.3.mlp.gate_proj');
  });
});
