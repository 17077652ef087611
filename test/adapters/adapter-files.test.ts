/** Adapter files: lossless save → load, PEFT-style names, pinned shapes, and clear errors. */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseLlamaConfig } from '../../lib/model/config.ts';
import { openSafetensors } from '../../lib/model/safetensors.ts';
import { parseAdapterConfig, type AdapterConfigInput } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { loadAdapter, saveAdapter } from '../../lib/adapters/adapter-files.ts';
import { adapterDelta } from '../../lib/adapters/merge.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';

const llama = parseLlamaConfig({
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
});
const rowNorms = (module: string) =>
  new Float32Array(module.includes('k_proj') || module.includes('v_proj') ? 8 : 16).fill(1.5);
const rand = seededRandom(9);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'moka-adapter-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CASES: Record<string, AdapterConfigInput> = {
  moka: {
    type: 'moka',
    components: { q_proj: [{ shape: [4, 4, 4, 4] }, { shape: [2, 8, 8, 2] }, { shape: [4, 4, 4, 4] }] },
    plan: { count: 2 },
  },
  mokas: { type: 'mokas', plan: { count: 2 } },
  krona: { type: 'krona', targetModules: 'all-linear' },
  lora: { type: 'lora', r: 2 },
  dora: { type: 'dora', r: 2, targetModules: ['k_proj'] },
};

describe.each(Object.entries(CASES))('%s adapter files', (type, cfg) => {
  it('round-trips every value bit for bit and keeps the planned shapes', async () => {
    const rt = createAdapterRuntime(llama, parseAdapterConfig(cfg), { seed: 1, baseRowNorms: rowNorms });
    const values = new Map(
      rt.tensors.map((t) => [t.name, Float32Array.from(randomNormal(t.init.length, rand))]),
    );
    const out = join(dir, type);
    await saveAdapter(out, rt, values, { baseModel: 'tiny-llama' });
    const loaded = await loadAdapter(out, llama, { baseRowNorms: rowNorms });
    expect(loaded.baseModel).toBe('tiny-llama');
    expect(loaded.runtime.tensors.map((t) => [t.name, t.shape])).toEqual(
      rt.tensors.map((t) => [t.name, t.shape]),
    );
    for (const [name, v] of values)
      expect(Buffer.from(loaded.values.get(name)!.buffer)).toEqual(Buffer.from(v.buffer));
    if (type !== 'dora') {
      const m = rt.modules[0]!;
      expect(adapterDelta(loaded.runtime, m, loaded.values)).toEqual(adapterDelta(rt, m, values));
    }
  });
});

describe('adapter file contents', () => {
  it('uses PEFT-style tensor names and splits stacked MoKA groups into components in plan order', async () => {
    const file = await openSafetensors(join(dir, 'moka', 'adapter_model.safetensors'));
    const names = file.names();
    expect(names).toContain('base_model.model.model.layers.0.self_attn.q_proj.moka_A.0');
    expect(names).toContain('base_model.model.model.layers.0.self_attn.q_proj.moka_B.2');
    expect(file.info('base_model.model.model.layers.0.self_attn.q_proj.moka_A.1').shape).toEqual([2, 8]);
    await file.close();
    const lora = await openSafetensors(join(dir, 'lora', 'adapter_model.safetensors'));
    expect(lora.names()).toContain('base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight');
    await lora.close();
    const config = JSON.parse(readFileSync(join(dir, 'lora', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      r: 2,
      lora_alpha: 16,
      use_dora: false,
      task_type: 'CAUSAL_LM',
    });
    const moka = JSON.parse(readFileSync(join(dir, 'moka', 'adapter_config.json'), 'utf8'));
    // Planned shapes are pinned in the saved config.
    expect(Object.keys(moka.adapter.components).sort()).toEqual(['k_proj', 'o_proj', 'q_proj', 'v_proj']);
  });

  it('refuses an incomplete directory, a different base model and tampered weights', async () => {
    const other = parseLlamaConfig({
      vocab_size: 32,
      hidden_size: 32,
      intermediate_size: 24,
      num_hidden_layers: 2,
      num_attention_heads: 4,
    });
    await expect(loadAdapter(join(dir, 'lora'), other)).rejects.toThrow(
      /trained on a base model of another shape \(hidden_size 16, this model 32; .*\)/,
    );
    await expect(loadAdapter(join(dir, 'nope'), llama)).rejects.toThrow(/does not exist/);
    const broken = join(dir, 'krona');
    unlinkSync(join(broken, 'adapter_config.json'));
    await expect(loadAdapter(broken, llama)).rejects.toThrow(
      /no adapter_config.json: not an adapter directory, or an incomplete write/,
    );
    writeFileSync(
      join(broken, 'adapter_config.json'),
      '{"format": "moka-adapter", "version": 1, "adapter": {"type": "lora", "r": 3}}',
    );
    await expect(loadAdapter(broken, llama)).rejects.toThrow(/lack|shape/);
  });
});
