// Regression figures from published configurations (PEFT's LoKr benchmark, QLoRA-style LoRA) and the
// MoKA paper, so a change in any counting rule shows up here.
import { describe, expect, it } from 'vitest';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import {
  baseModelParamCount,
  doraParamCount,
  gateParamCount,
  kronaParamCount,
  loraParamCount,
  mokaParamCount,
  mokasParamCount,
} from '../../lib/adapters/param-count.ts';
import { planAdapter } from '../../lib/adapters/planner.ts';
import { loadFixture } from './fixtures.ts';

const llama2 = loadFixture('llama-2-7b');
const llama3 = loadFixture('llama-3-8b');
const total = (model: typeof llama2, raw: object) => planAdapter(model, parseAdapterConfig(raw)).totalParams;

describe('per-layer formulas', () => {
  it('LoRA r(m+n), DoRA r(m+n)+m', () => {
    expect(loraParamCount(1024, 4096, 8)).toBe(8 * 5120);
    expect(doraParamCount(1024, 4096, 8)).toBe(8 * 5120 + 1024);
  });

  it('MoKA Σ(m_a n_a + m_b n_b) plus r gate logits, or r·n for a token gate', () => {
    const shapes = [
      [64, 64, 64, 64],
      [32, 128, 128, 32],
    ] as const;
    expect(mokaParamCount(shapes, 'static', 4096)).toBe(16384 + 2);
    expect(mokaParamCount(shapes, 'token', 4096)).toBe(16384 + 2 * 4096);
    expect(mokaParamCount(shapes, 'none', 4096)).toBe(16384);
    // One component: softmax of one logit is constant, so there is no gate.
    expect(mokaParamCount([[64, 64, 64, 64]], 'static', 4096)).toBe(8192);
    expect(gateParamCount('static', 1, 4096)).toBe(0);
  });

  it('MoKAs Σ m·n/a_i² plus the gate', () => {
    expect(mokasParamCount(4096, 4096, [32, 64], 'static')).toBe(16384 + 4096 + 2);
    expect(mokasParamCount(4096, 11008, [64], 'static')).toBe(64 * 172);
  });

  it('KronA uses PEFT LoKr factor shapes', () => {
    expect(kronaParamCount(4096, 4096, { decomposeFactor: -1 })).toBe(8192);
    expect(kronaParamCount(4096, 4096, { decomposeFactor: -1, r: 8 })).toBe(4096 + 1024);
  });
});

describe('published parameter counts', () => {
  it("PEFT's LoKr benchmark: Llama-3.2-3B, q_proj+v_proj, r=32, α=64, f=4 → 2,294,656", () => {
    const llama32 = loadFixture('llama-3.2-3b');
    const raw = { type: 'krona', targetModules: ['q_proj', 'v_proj'], r: 32, alpha: 64, decomposeFactor: 4 };
    expect(total(llama32, raw)).toBe(2_294_656);
  });

  it('LoKr defaults (r=8, f=−1) on all 7 projections: ≈1.33M (LLaMA2-7B), ≈1.34M (LLaMA3-8B)', () => {
    const raw = { type: 'krona', targetModules: 'all-linear', r: 8 };
    expect(total(llama2, raw)).toBe(1_331_200);
    expect(total(llama3, raw)).toBe(1_343_488);
  });

  it('QLoRA-style LoRA on all 7 projections: r=64 → 159.9M / 167.8M, r=16 → 40.0M / 41.9M', () => {
    const lora = (r: number) => ({ type: 'lora', targetModules: 'all-linear', r });
    expect(total(llama2, lora(64))).toBe(159_907_840);
    expect(total(llama3, lora(64))).toBe(167_772_160);
    expect((total(llama2, lora(16)) / 1e6).toFixed(1)).toBe('40.0');
    expect((total(llama3, lora(16)) / 1e6).toFixed(1)).toBe('41.9');
  });

  it('default MoKA (5 balanced components on q,k,v,o) matches the paper: 5.2M / 3.9M', () => {
    expect(total(llama2, { type: 'moka' })).toBe(5_243_520);
    expect(total(llama3, { type: 'moka' })).toBe(3_932_800);
  });

  it('base model sizes: LLaMA2-7B 6.74B, LLaMA3-8B 8.03B', () => {
    expect(baseModelParamCount(llama2)).toBe(6_738_415_616);
    expect(baseModelParamCount(llama3)).toBe(8_030_261_248);
  });
});
