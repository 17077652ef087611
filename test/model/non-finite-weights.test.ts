// A NaN or infinite base weight is caught where weights are read (once, streaming), naming the tensor and the
// position, in every command: before, generate printed NUL characters with exit 0, dequantize wrote NaN weights
// and train blamed the learning rate.
import { openSync, closeSync, writeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAdaptedModel } from '../../lib/adapters/adapted-model.ts';
import { openCheckpoint } from '../../lib/model/checkpoint.ts';
import { f32ToBf16Bits } from '../../lib/model/dtype-convert.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { dequantizeCheckpoint } from '../../lib/quant/dequantize-checkpoint.ts';
import { openFrozenBase } from '../../lib/quant/frozen-base.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { runMoka } from '../helpers/run-moka.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-nonfinite-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Overwrites element `index` (row-major) of a stored tensor with `bytes`. */
async function poke(dir: string, tensor: string, index: number, bytes: Uint8Array): Promise<void> {
  const ckpt = await openCheckpoint(dir, { validate: false });
  const { file, offset } = ckpt.location(tensor);
  await ckpt.close();
  const fd = openSync(file, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset + index * bytes.length);
  closeSync(fd);
}

const DOWN = 'model.layers.1.mlp.down_proj.weight'; // [hidden 64, intermediate 128]
const f32 = (x: number) => new Uint8Array(new Float32Array([x]).buffer);

const f32Model = join(root, 'f32-nan');
const bf16Model = join(root, 'bf16-inf');
const nf4Model = join(root, 'nf4-nan');

beforeAll(async () => {
  await writeTinyCheckpoint({ dir: f32Model });
  await poke(f32Model, DOWN, 3 * 128 + 17, f32(NaN));
  await writeTinyCheckpoint({ dir: bf16Model, dtype: 'bfloat16' });
  await poke(
    bf16Model,
    'model.embed_tokens.weight',
    5 * 64 + 2,
    new Uint8Array(new Uint16Array([f32ToBf16Bits(-Infinity)]).buffer),
  );
  // A 4-bit model whose block scale went bad: the codes are finite, the absmax is not.
  const clean = join(root, 'clean');
  await writeTinyCheckpoint({ dir: clean });
  await quantizeCheckpoint({ modelDir: clean, outDir: nf4Model, format: 'nf4' });
  await poke(nf4Model, 'model.layers.0.self_attn.v_proj.weight.absmax', 7, f32(Infinity));
});

describe('non-finite base weights', () => {
  it('generate fails naming the tensor and position instead of printing NUL characters', () => {
    const r = runMoka(['generate', '--model', f32Model, '--prompt', 'Hi', '--max-new-tokens', '3']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^moka: error: .*f32-nan\/model\.safetensors: tensor "model\.layers\.1\.mlp\.down_proj\.weight" holds a non-finite weight \(NaN at \[3, 17\]\); the checkpoint is corrupt/,
    );
  });

  it('a bf16 checkpoint (converted at load, the path of score and train) names -Infinity and its position', async () => {
    await expect(loadAdaptedModel(bf16Model)).rejects.toThrow(
      /tensor "model\.embed_tokens\.weight" holds a non-finite weight \(-Infinity at \[5, 2\]\)/,
    );
    await expect(openFrozenBase(bf16Model)).rejects.toThrow(/-Infinity at \[5, 2\]/);
  });

  it('a 4-bit checkpoint with an infinite block scale: loading and dequantize fail, nothing is written', async () => {
    const out = join(root, 'deq');
    await expect(dequantizeCheckpoint({ modelDir: nf4Model, outDir: out })).rejects.toThrow(
      /tensor "model\.layers\.0\.self_attn\.v_proj\.weight\.absmax" holds a non-finite weight \(Infinity at \[7\]\)/,
    );
    await expect(openFrozenBase(nf4Model)).rejects.toThrow(
      /v_proj\.weight\.absmax" holds a non-finite weight/,
    );
    expect(() => openSync(out, 'r')).toThrow(/ENOENT/);
  });
});
