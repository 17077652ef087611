import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseLlamaConfig, projectionShapes, projectionWeightName } from '../../lib/model/config.ts';

const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`../fixtures/configs/${name}.json`, import.meta.url), 'utf8'));

describe('parseLlamaConfig', () => {
  it('reads LLaMA 3 8B: GQA and rope_theta', () => {
    const c = parseLlamaConfig(fixture('llama-3-8b'));
    expect(c).toMatchObject({
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      ropeTheta: 500000,
      ropeScaling: null,
    });
    expect(projectionShapes(c).k_proj).toEqual({ out: 1024, in: 4096 });
    expect(projectionShapes(c).down_proj).toEqual({ out: 4096, in: 14336 });
  });

  it('reads LLaMA 3.2 1B: explicit head_dim, llama3 rope scaling, tied embeddings', () => {
    const c = parseLlamaConfig(fixture('llama-3.2-1b'));
    expect(c.headDim).toBe(64);
    expect(c.tieWordEmbeddings).toBe(true);
    expect(c.ropeScaling).toEqual({
      type: 'llama3',
      factor: 32,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
  });

  it('defaults rope_theta to 10000 (LLaMA 2)', () => {
    expect(parseLlamaConfig(fixture('llama-2-7b')).ropeTheta).toBe(10000);
  });

  it('rejects unsupported fields by name', () => {
    const base = fixture('llama-2-7b');
    expect(() => parseLlamaConfig({ ...base, hidden_act: 'gelu' })).toThrow(/hidden_act/);
    expect(() => parseLlamaConfig({ ...base, architectures: ['MistralForCausalLM'] })).toThrow(
      /architectures/,
    );
    expect(() => parseLlamaConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } })).toThrow(
      /yarn/,
    );
    expect(() => parseLlamaConfig({ ...base, num_key_value_heads: 5 })).toThrow(/num_key_value_heads/);
    expect(() => parseLlamaConfig({ ...base, hidden_size: 'big' })).toThrow(/hidden_size/);
  });

  it('names projection weights the HF way', () => {
    expect(projectionWeightName(3, 'q_proj')).toBe('model.layers.3.self_attn.q_proj.weight');
    expect(projectionWeightName(0, 'down_proj')).toBe('model.layers.0.mlp.down_proj.weight');
  });
});
