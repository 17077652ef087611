import { describe, expect, it } from 'vitest';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import {
  kroneckerMaxRank,
  kroneckerParamCount,
  type KroneckerShape,
} from '../../lib/adapters/kronecker-shapes.ts';
import {
  compareAdapterTypes,
  describeComponent,
  kroneckerCandidates,
  loraRankForBudget,
  planAdapter,
  type AdapterPlan,
} from '../../lib/adapters/planner.ts';
import { resolveTargets } from '../../lib/adapters/targets.ts';
import { parseLlamaConfig } from '../../lib/model/config.ts';
import { loadFixture } from './fixtures.ts';

const llama2 = loadFixture('llama-2-7b');
const llama3 = loadFixture('llama-3-8b');
const plan = (model: typeof llama2, raw: object) => planAdapter(model, parseAdapterConfig(raw));
const shapesOf = (p: AdapterPlan, projection: string) =>
  p.projections
    .find((x) => x.projection === projection)!
    .components.map((c) => (c.kind === 'kronecker' ? c.shape : null));

/** A small LLaMA (hidden 64, GQA, odd intermediate) like the generated test checkpoints. */
const tiny = parseLlamaConfig({
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 256,
});

describe('kroneckerCandidates', () => {
  it('lists every valid non-dense shape, cheapest first, with params and max rank', () => {
    const options = kroneckerCandidates(4096, 4096);
    expect(options).toHaveLength(169 - 2);
    expect(options[0]).toEqual({ shape: [64, 64, 64, 64], params: 8192, maxRank: 4096 });
    for (let i = 1; i < options.length; i++)
      expect(options[i]!.params).toBeGreaterThanOrEqual(options[i - 1]!.params);
    for (const o of options) {
      expect(o.params).toBe(kroneckerParamCount(o.shape));
      expect(o.maxRank).toBe(kroneckerMaxRank(o.shape));
    }
  });
});

describe('MoKA planner, default (5 components per projection)', () => {
  it('picks five distinct equal-cost balanced shapes on 4096x4096, the full-rank one first', () => {
    const p = plan(llama2, { type: 'moka' });
    expect(shapesOf(p, 'q_proj')).toEqual([
      [64, 64, 64, 64],
      [32, 128, 128, 32],
      [128, 32, 32, 128],
      [16, 256, 256, 16],
      [256, 16, 16, 256],
    ]);
    const q = p.projections[0]!;
    expect(q.components.map((c) => c.maxRank)).toEqual([4096, 1024, 1024, 256, 256]);
    expect(q).toMatchObject({ gateParams: 5, paramsPerLayer: 5 * 8192 + 5, maxRank: 4096, layers: 32 });
    expect(p.totalParams).toBe(5_243_520);
  });

  it('handles GQA k/v (1024x4096) with their own shapes', () => {
    const p = plan(llama3, { type: 'moka' });
    expect(shapesOf(p, 'k_proj')[0]).toEqual([32, 64, 32, 64]);
    const k = p.projections.find((x) => x.projection === 'k_proj')!;
    expect(k.components.map((c) => c.params)).toEqual([4096, 4096, 4096, 4096, 4096]);
    expect(k.maxRank).toBe(1024);
    expect(p.totalParams).toBe(3_932_800);
  });

  it('covers the MLP projections with the limited divisors of 11008 and 14336', () => {
    const p = plan(llama2, { type: 'moka', targetModules: 'all-linear' });
    expect(shapesOf(p, 'gate_proj')[0]).toEqual([86, 64, 128, 64]);
    expect(shapesOf(p, 'down_proj')[0]).toEqual([64, 86, 64, 128]);
    for (const pr of p.projections) expect(pr.maxRank).toBe(Math.min(pr.out, pr.in));
    expect(shapesOf(plan(llama3, { type: 'moka', targetModules: ['up_proj'] }), 'up_proj')[0]).toEqual([
      112, 64, 128, 64,
    ]);
  });

  it('works on a tiny model', () => {
    const p = plan(tiny, { type: 'moka', targetModules: 'all-linear' });
    for (const pr of p.projections) {
      expect(pr.components).toHaveLength(5);
      expect(new Set(pr.components.map((c) => JSON.stringify(c.kind === 'kronecker' && c.shape))).size).toBe(
        5,
      );
    }
  });
});

describe('MoKA planner with a budget', () => {
  const budgets = [800_000, 1_000_000, 2_000_000, 5_000_000, 20_000_000];

  it.each([
    ['LLaMA2-7B', llama2],
    ['LLaMA3-8B', llama3],
  ])('%s: respects the budget, uses valid distinct shapes, stays full rank', (_, model) => {
    for (const targetModules of [['q_proj', 'k_proj', 'v_proj', 'o_proj'], 'all-linear']) {
      for (const budget of budgets) {
        let p: AdapterPlan;
        try {
          p = plan(model, { type: 'moka', targetModules, plan: { budget } });
        } catch (err) {
          // Only a budget below one cheapest component per projection may fail.
          expect((err as Error).message).toMatch(/is too small for MoKA/);
          continue;
        }
        expect(p.totalParams).toBeLessThanOrEqual(budget);
        for (const pr of p.projections) {
          const shapes = pr.components.map((c) =>
            c.kind === 'kronecker' ? c.shape : ([] as unknown as KroneckerShape),
          );
          expect(new Set(shapes.map((s) => s.join())).size).toBe(shapes.length);
          for (const [mA, nA, mB, nB] of shapes) {
            expect(mA * mB).toBe(pr.out);
            expect(nA * nB).toBe(pr.in);
          }
          expect(pr.components.length).toBeLessThanOrEqual(8);
          expect(pr.maxRank).toBe(Math.min(pr.out, pr.in));
        }
      }
    }
  });

  it('spends most of a 5M budget, with at least two distinct shapes per projection', () => {
    for (const model of [llama2, llama3]) {
      const p = plan(model, { type: 'moka', plan: { budget: '5M' } });
      expect(p.totalParams).toBeGreaterThan(0.95 * 5e6);
      for (const pr of p.projections) expect(pr.components.length).toBeGreaterThanOrEqual(2);
    }
  });

  it('is deterministic and independent of how targets are ordered', () => {
    const a = plan(llama3, { type: 'moka', targetModules: ['v_proj', 'q_proj'], plan: { budget: '1.5M' } });
    const b = plan(llama3, { type: 'moka', targetModules: ['q_proj', 'v_proj'], plan: { budget: '1.5M' } });
    expect(a.projections).toEqual(b.projections);
    expect(a.totalParams).toBe(b.totalParams);
  });

  it('grows projection types in step (round robin), so none starves the others', () => {
    const p = plan(llama2, { type: 'moka', plan: { budget: '2M' } });
    const counts = p.projections.map((pr) => pr.components.length);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
  });

  it('gives a budget that fits only one component per projection exactly one (full-rank) component', () => {
    const p = plan(llama2, { type: 'moka', plan: { budget: 32 * 4 * 8192 } });
    for (const pr of p.projections) {
      expect(pr.components).toHaveLength(1);
      expect(pr.gateParams).toBe(0);
      expect(pr.maxRank).toBe(4096);
    }
    expect(p.totalParams).toBe(32 * 4 * 8192);
  });

  it('fails a too-small budget naming the smallest possible cost', () => {
    expect(() => plan(llama3, { type: 'moka', plan: { budget: '10k' } })).toThrow(
      'budget 10k is too small for MoKA on q_proj, k_proj, v_proj, o_proj: one cheapest component per projection needs ' +
        '786,432 parameters (24,576 per layer × 32 layers); raise the budget to at least 786.43k or target fewer projections or layers',
    );
  });

  it('count and budget together: exact counts, or an error saying what they need', () => {
    const p = plan(llama2, { type: 'moka', plan: { budget: '5M', count: 2 } });
    for (const pr of p.projections) expect(pr.components).toHaveLength(2);
    expect(() => plan(llama2, { type: 'moka', plan: { budget: '2M', count: 5 } })).toThrow(
      /budget 2M does not fit 5 components on .*; 5 components per projection need about 5,243,520 parameters/,
    );
  });

  it('counts token-gate weights W_g (r×n) against the budget', () => {
    const p = plan(llama3, { type: 'moka', targetModules: ['q_proj'], gate: 'token', plan: { count: 3 } });
    expect(p.projections[0]!.gateParams).toBe(3 * 4096);
    expect(plan(llama3, { type: 'moka', gate: 'none' }).projections[0]!.gateParams).toBe(0);
  });
});

describe('MoKA with explicit shapes', () => {
  it('uses the given shapes and plans the projections they leave out', () => {
    const p = plan(llama3, {
      type: 'moka',
      components: { q_proj: [{ shape: [64, 64, 64, 64] }, { shape: [64, 64, 64, 64] }] },
      plan: { count: 2 },
    });
    expect(p.projections[0]).toMatchObject({
      projection: 'q_proj',
      source: 'explicit',
      paramsPerLayer: 16384 + 2,
    });
    expect(p.projections[1]).toMatchObject({ projection: 'k_proj', source: 'planned' });
    expect(p.projections[1]!.components).toHaveLength(2);
  });

  it('checks a shared list against every projection type, naming the layer that does not fit', () => {
    expect(() => plan(llama3, { type: 'moka', components: [{ shape: [64, 64, 64, 64] }] })).toThrow(
      'model.layers.0.self_attn.k_proj [1024x4096]: component 1 shape [64,64,64,64] gives 4096x4096; ' +
        'm_a·m_b must equal 1024 (out_features) — try [64,64,16,64]',
    );
    expect(() =>
      plan(llama3, {
        type: 'moka',
        layersToTransform: [3],
        components: { q_proj: [{ shape: [64, 64, 32, 64] }] },
      }),
    ).toThrow('model.layers.3.self_attn.q_proj [4096x4096]: component 1 shape [64,64,32,64] gives 2048x4096');
  });

  it('subtracts explicit components from the budget', () => {
    const p = plan(llama2, {
      type: 'moka',
      components: { q_proj: [{ shape: [32, 32, 128, 128] }] },
      plan: { budget: '3M' },
    });
    expect(p.totalParams).toBeLessThanOrEqual(3e6);
    expect(() =>
      plan(llama2, {
        type: 'moka',
        components: { q_proj: [{ shape: [16, 16, 256, 256] }] },
        plan: { budget: '1M' },
      }),
    ).toThrow(/spent by the explicit components alone/);
  });
});

describe('MoKAs planner', () => {
  it('default: a block as large as the cheapest MoKA component, then the next finer one', () => {
    const p = plan(llama3, { type: 'mokas' });
    const blocks = p.projections.map((pr) =>
      pr.components.map((c) => (c.kind === 'block-diagonal' ? c.blocks : 0)),
    );
    expect(blocks).toEqual([
      [64, 128],
      [32, 64],
      [32, 64],
      [64, 128],
    ]);
    expect(describeComponent(p.projections[0]!.components[0]!, 4096, 4096)).toBe('I_64 ⊗ 64x64');
    expect(p.projections.every((pr) => pr.maxRank === Math.min(pr.out, pr.in))).toBe(true);
    expect(p.totalParams).toBe(655_616);
  });

  it('a budget buys coarser blocks, within the budget, same block counts across projections', () => {
    for (const budget of [700_000, 3_000_000, 12_000_000]) {
      const p = plan(llama2, { type: 'mokas', targetModules: 'all-linear', plan: { budget } });
      expect(p.totalParams).toBeLessThanOrEqual(budget);
      const firsts = p.projections.map((pr) =>
        pr.components[0]!.kind === 'block-diagonal' ? pr.components[0]!.blocks : 0,
      );
      expect(new Set(firsts).size).toBe(1);
    }
    const small = plan(llama2, { type: 'mokas', plan: { budget: '1M' } }).projections[0]!.components[0]!;
    const large = plan(llama2, { type: 'mokas', plan: { budget: '10M' } }).projections[0]!.components[0]!;
    expect(large.params).toBeGreaterThan(small.params);
  });

  it('explicit block counts are validated per layer; too-small budgets name the minimum', () => {
    expect(plan(llama2, { type: 'mokas', blocks: [16, 32] }).projections[0]!.paramsPerLayer).toBe(
      65536 + 16384 + 2,
    );
    expect(() => plan(llama3, { type: 'mokas', targetModules: ['k_proj'], blocks: [2048] })).toThrow(
      'model.layers.0.self_attn.k_proj [1024x4096]: MoKAs component 1 block count 2048 does not divide both 1024 and 4096',
    );
    expect(() => plan(llama2, { type: 'mokas', plan: { budget: 100 } })).toThrow(
      /budget 100 is too small for MoKAs with 2 components on q_proj, k_proj, v_proj, o_proj: the finest blocks need/,
    );
  });
});

describe('KronA, LoRA and DoRA plans', () => {
  it('KronA uses PEFT LoKr factors per projection type', () => {
    const p = plan(llama3, { type: 'krona' });
    expect(p.projections.map((pr) => describeComponent(pr.components[0]!, pr.out, pr.in))).toEqual([
      '64x64 ⊗ 64x64',
      '32x64 ⊗ 32x64',
      '32x64 ⊗ 32x64',
      '64x64 ⊗ 64x64',
    ]);
  });

  it('LoRA/DoRA: r(m+n) (+m), max rank r', () => {
    const lora = plan(llama2, { type: 'lora', r: 16, layersToTransform: [0, 1] });
    expect(lora.totalParams).toBe(2 * 4 * 16 * 8192);
    expect(lora.projections[0]!.maxRank).toBe(16);
    expect(plan(llama2, { type: 'dora', r: 16, layersToTransform: [0, 1] }).totalParams).toBe(
      2 * 4 * (16 * 8192 + 4096),
    );
  });

  it('loraRankForBudget picks the largest r that fits', () => {
    const targets = resolveTargets(llama2, { targetModules: ['q_proj', 'v_proj'] });
    const r = loraRankForBudget(targets, 5e6, false);
    expect(r * 64 * 8192).toBeLessThanOrEqual(5e6);
    expect((r + 1) * 64 * 8192).toBeGreaterThan(5e6);
    expect(() => loraRankForBudget(targets, 1000, true)).toThrow(/too small for DoRA/);
  });
});

describe('compareAdapterTypes', () => {
  it('reports every type on the same targets at default settings', () => {
    const totals = (model: typeof llama2) =>
      Object.fromEntries(
        compareAdapterTypes(model, { targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] }).map((c) => [
          c.type,
          c.totalParams,
        ]),
      );
    expect(totals(llama2)).toEqual({
      moka: 5_243_520,
      mokas: 655_616,
      krona: 1_048_576,
      lora: 8_388_608,
      dora: 8_912_896,
    });
    expect(totals(llama3)).toEqual({
      moka: 3_932_800,
      mokas: 655_616,
      krona: 786_432,
      lora: 6_815_744,
      dora: 7_143_424,
    });
  });

  it('sizes budgeted types to the budget and reports those that cannot fit', () => {
    const cmp = compareAdapterTypes(llama2, { targetModules: ['q_proj'], budget: 300_000 });
    expect(cmp.find((c) => c.type === 'lora')).toMatchObject({
      totalParams: 262_144,
      note: 'r=1 fits the budget',
    });
    expect(cmp.find((c) => c.type === 'moka')!.totalParams).toBeLessThanOrEqual(300_000);
    expect(
      compareAdapterTypes(llama2, { targetModules: ['q_proj'], budget: 1000 }).find((c) => c.type === 'moka'),
    ).toMatchObject({
      totalParams: null,
    });
  });
});
