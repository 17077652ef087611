import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { quantizedModelKey } from '../../lib/pipeline/model-cache.ts';
import { parseRunConfig } from '../../lib/pipeline/run-config.ts';

it('the quantized-model cache key follows the source content and the quantization settings', async () => {
  const model = mkdtempSync(join(tmpdir(), 'moka-cachekey-'));
  writeFileSync(join(model, 'config.json'), '{"hidden_size": 8}');
  writeFileSync(join(model, 'model.safetensors'), Buffer.alloc(1000, 1));
  const cfg = (quantize: unknown) =>
    parseRunConfig({ model, quantize, adapters: { type: 'lora' }, data: { train: 'x.jsonl' } });
  const nf4 = await quantizedModelKey(cfg({ format: 'nf4' }));
  expect(nf4).toMatch(/^nf4-[0-9a-f]{32}$/);
  expect(await quantizedModelKey(cfg({ format: 'nf4' }))).toBe(nf4); // stable
  expect(await quantizedModelKey(cfg({ format: 'nf4', doubleQuant: true }))).not.toBe(nf4);
  expect(await quantizedModelKey(cfg({ format: 'nf4', blockSize: 128 }))).not.toBe(nf4);
  expect(await quantizedModelKey(cfg({ format: 'int4' }))).toMatch(/^int4-/);
  expect(await quantizedModelKey(cfg(false))).toBeNull();
  // Same size, one byte different: a different key.
  const changed = Buffer.alloc(1000, 1);
  changed[500] = 2;
  writeFileSync(join(model, 'model.safetensors'), changed);
  expect(await quantizedModelKey(cfg({ format: 'nf4' }))).not.toBe(nf4);
});
