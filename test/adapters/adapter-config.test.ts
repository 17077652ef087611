import { describe, expect, it } from 'vitest';
import {
  adapterScale,
  defaultAdapterConfig,
  parseAdapterConfig,
  type AdapterConfigInput,
} from '../../lib/adapters/adapter-config.ts';
import { UserError } from '../../lib/errors.ts';

const errorOf = (raw: unknown) => {
  try {
    parseAdapterConfig(raw, 'adapter.json');
  } catch (err) {
    expect(err).toBeInstanceOf(UserError);
    return (err as Error).message;
  }
  throw new Error('expected a UserError');
};

describe('adapter config defaults', () => {
  it('moka: static gate at zeros, scale 1, A kaiming / B zero, attention targets', () => {
    expect(defaultAdapterConfig('moka')).toEqual({
      type: 'moka',
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
      dropout: 0,
      gate: 'static',
      gateInit: 'zeros',
      scale: 1,
      init: 'zero-b',
    });
  });

  it('lora: r 8, alpha 16 (scale 2), no rsLoRA; dora the same', () => {
    const lora = defaultAdapterConfig('lora');
    expect(lora).toMatchObject({ type: 'lora', r: 8, alpha: 16, rsLora: false, dropout: 0 });
    expect(adapterScale(lora)).toBe(2);
    expect(defaultAdapterConfig('dora')).toMatchObject({ type: 'dora', r: 8, alpha: 16 });
    expect(adapterScale(parseAdapterConfig({ type: 'lora', r: 16, alpha: 16, rsLora: true }))).toBe(4);
  });

  it('krona: PEFT decompose_factor −1, dense factors, scale 1 (alpha/r once r is set)', () => {
    const krona = defaultAdapterConfig('krona');
    expect(krona).toMatchObject({ type: 'krona', decomposeFactor: -1, decomposeBoth: false, init: 'zero-a' });
    expect(adapterScale(krona)).toBe(1);
    expect(adapterScale(parseAdapterConfig({ type: 'krona', r: 32, alpha: 64 }))).toBe(2);
    expect(adapterScale(parseAdapterConfig({ type: 'krona', alpha: 0.5 }))).toBe(0.5);
  });

  it('mokas: zero-initialised blocks, gate kept', () => {
    expect(defaultAdapterConfig('mokas')).toMatchObject({ type: 'mokas', gate: 'static', init: 'zero' });
  });

  it('accepts explicit shapes per projection, budgets as strings, all-linear targets', () => {
    const raw: AdapterConfigInput = {
      type: 'moka',
      targetModules: 'all-linear',
      components: { q_proj: [{ shape: [64, 64, 64, 64] }] },
      plan: { budget: '2.5M' },
      layersToTransform: [0, 1],
    };
    const cfg = parseAdapterConfig(raw);
    expect(cfg.targetModules).toHaveLength(7);
    expect(cfg.type === 'moka' && cfg.plan).toEqual({ budget: 2_500_000, maxComponents: 8 });
  });

  it('orders and deduplicates target modules', () => {
    const cfg = parseAdapterConfig({ type: 'lora', targetModules: ['v_proj', 'q_proj', 'v_proj'] });
    expect(cfg.targetModules).toEqual(['q_proj', 'v_proj']);
  });
});

describe('adapter config errors name the field and the fix', () => {
  it('unknown type', () => {
    expect(errorOf({ type: 'lokr' })).toBe(
      'adapter.json: type: must be one of moka, mokas, krona, lora, dora',
    );
  });

  it('unknown field, listing the valid ones', () => {
    expect(errorOf({ type: 'lora', rank: 8 })).toMatch(
      /^adapter\.json: unknown field "rank"; valid fields: .*\br\b/,
    );
    expect(errorOf({ type: 'moka', plan: { budgt: '5M' } })).toBe(
      'adapter.json: plan: unknown field "budgt"; valid fields: budget, count, maxComponents',
    );
  });

  it('unknown projection names', () => {
    expect(errorOf({ type: 'moka', targetModules: ['q_proj', 'query'] })).toContain(
      'unknown target module "query"; valid: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (or "all-linear")',
    );
    expect(errorOf({ type: 'moka', components: { qproj: [] } })).toContain(
      'components: unknown field "qproj"',
    );
  });

  it('bad values', () => {
    expect(errorOf({ type: 'lora', r: 0 })).toBe('adapter.json: r: must be at least 1');
    expect(errorOf({ type: 'lora', r: 2.5 })).toBe('adapter.json: r: must be a whole number');
    expect(errorOf({ type: 'moka', plan: { budget: 'lots' } })).toContain('"lots" is not a parameter count');
    expect(errorOf({ type: 'moka', components: [{ shape: [64, 64, 64] }] })).toBe(
      'adapter.json: components[0].shape: must be [m_a, n_a, m_b, n_b]',
    );
    expect(errorOf({ type: 'moka', components: 5 })).toContain('components: must be a list of {"shape"');
    expect(errorOf({ type: 'mokas', blocks: [0] })).toBe(
      'adapter.json: blocks[0]: block count must be at least 1',
    );
    expect(errorOf('moka')).toBe('adapter.json: must be a JSON object such as {"type": "moka"}');
    expect(errorOf({ type: 'krona', decomposeFactor: -2 })).toBe(
      'adapter.json: decomposeFactor: must be -1 (near √dim) or a positive integer',
    );
    expect(errorOf({ type: 'lora', dropout: 1 })).toBe('adapter.json: dropout: must be below 1');
  });

  it('contradictory fields', () => {
    expect(
      errorOf({ type: 'moka', components: [{ shape: [64, 64, 64, 64] }], plan: { count: 2 } }),
    ).toContain('give either components (one list for every target) or plan, not both');
    expect(errorOf({ type: 'moka', plan: {} })).toContain('plan needs a budget');
    expect(errorOf({ type: 'mokas', targetModules: ['q_proj'], blocks: { v_proj: [32] } })).toContain(
      'blocks.v_proj is given but v_proj is not targeted',
    );
    expect(errorOf({ type: 'krona', decomposeBoth: true })).toContain('set r as well');
  });
});
