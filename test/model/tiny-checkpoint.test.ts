// The tiny-checkpoint generator and `moka init-tiny`: a complete, loadable, deterministic HF directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint } from '../../lib/model/checkpoint.ts';
import { decodeFloat32, encodeFloat32 } from '../../lib/model/dtype-convert.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { runMoka } from '../helpers/run-moka.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-tiny-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('writeTinyCheckpoint', () => {
  it('writes a complete directory that opens, with GQA defaults and a working tokenizer', async () => {
    const dir = join(root, 'default');
    const r = await writeTinyCheckpoint({ dir, seed: 1 });
    expect((await readdir(dir)).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    const ck = await openCheckpoint(dir);
    try {
      expect(ck.config).toMatchObject({
        vocabSize: 512,
        hiddenSize: 64,
        intermediateSize: 128,
        numLayers: 2,
        numHeads: 4,
        numKvHeads: 2,
        headDim: 16,
        tieWordEmbeddings: false,
        torchDtype: 'float32',
        bosTokenId: r.bosId,
        eosTokenIds: [r.eosId],
      });
      expect(ck.tensorNames().length).toBe(1 + 2 * 9 + 2);
      expect(r.numParameters).toBe(
        ck.tensorNames().reduce((n, name) => n + ck.info(name).shape.reduce((a, b) => a * b, 1), 0),
      );
      const q = await ck.readFloat32('model.layers.0.self_attn.q_proj.weight');
      const std = Math.sqrt(q.reduce((s, x) => s + x * x, 0) / q.length);
      expect(std).toBeGreaterThan(0.015); // ~0.02 · N(0, 1); 4096 samples put the estimate within a few %
      expect(std).toBeLessThan(0.025);
      const norm = await ck.readFloat32('model.norm.weight');
      expect(Math.abs(norm.reduce((s, x) => s + x, 0) / norm.length - 1)).toBeLessThan(0.1);

      const tok = ck.tokenizer();
      expect(tok.eosIds).toContain(r.eosId);
      expect(tok.eosIds.length).toBe(2); // <|end_of_text|> and <|eot_id|> from generation_config.json
      expect(tok.decode(tok.encode('tiny test ✓', { addSpecialTokens: false }))).toBe('tiny test ✓');
      expect(ck.tokenizerConfig?.chat_template).toBeTypeOf('string');
    } finally {
      await ck.close();
    }
  });

  it('is deterministic in the seed, and a bf16 copy holds the same weights rounded', async () => {
    const a = join(root, 'seed-a');
    const b = join(root, 'seed-b');
    const c = join(root, 'seed-c');
    await writeTinyCheckpoint({ dir: a, seed: 7, numLayers: 1 });
    await writeTinyCheckpoint({ dir: b, seed: 7, numLayers: 1 });
    await writeTinyCheckpoint({ dir: c, seed: 7, numLayers: 1, dtype: 'bfloat16', shards: 2 });
    expect(
      (await readFile(join(a, 'model.safetensors'))).equals(await readFile(join(b, 'model.safetensors'))),
    ).toBe(true);
    const ca = await openCheckpoint(a);
    const cc = await openCheckpoint(c);
    for (const name of ca.tensorNames()) {
      const f32 = await ca.readFloat32(name);
      expect(await cc.readFloat32(name)).toEqual(decodeFloat32('BF16', encodeFloat32('BF16', f32)));
    }
    await ca.close();
    await cc.close();
    const other = join(root, 'seed-other');
    await writeTinyCheckpoint({ dir: other, seed: 8, numLayers: 1 });
    expect(
      (await readFile(join(a, 'model.safetensors'))).equals(await readFile(join(other, 'model.safetensors'))),
    ).toBe(false);
  });

  it('options: tied embeddings, explicit head_dim, llama3 RoPE scaling, padded vocabulary', async () => {
    const dir = join(root, 'options');
    await writeTinyCheckpoint({
      dir,
      tieWordEmbeddings: true,
      hiddenSize: 32,
      numHeads: 4,
      numKvHeads: 1,
      headDim: 16,
      vocabSize: 640,
      ropeTheta: 500000,
      ropeScaling: { factor: 8 },
      dtype: 'float16',
    });
    const ck = await openCheckpoint(dir);
    expect(ck.has('lm_head.weight')).toBe(false);
    expect(ck.info('model.layers.0.self_attn.q_proj.weight').shape).toEqual([64, 32]);
    expect(ck.info('model.layers.0.self_attn.k_proj.weight').shape).toEqual([16, 32]);
    expect(ck.info('model.embed_tokens.weight')).toMatchObject({ dtype: 'F16', shape: [640, 32] });
    expect(ck.config.ropeScaling).toEqual({
      type: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 2048,
    });
    expect(ck.config.ropeTheta).toBe(500000);
    await ck.close();
  });

  it('refuses bad options and non-empty directories', async () => {
    await expect(writeTinyCheckpoint({ dir: join(root, 'x1'), vocabSize: 100 })).rejects.toThrow(
      /vocabSize 100 is smaller than the tiny tokenizer's 512 tokens/,
    );
    await expect(writeTinyCheckpoint({ dir: join(root, 'x2'), numHeads: 4, numKvHeads: 3 })).rejects.toThrow(
      /num_key_value_heads/,
    );
    await expect(writeTinyCheckpoint({ dir: join(root, 'x3'), hiddenSize: 30, numHeads: 4 })).rejects.toThrow(
      /headDim/,
    );
    const busy = join(root, 'busy');
    await mkdir(busy);
    await writeFile(join(busy, 'notes.txt'), 'mine');
    await expect(writeTinyCheckpoint({ dir: busy })).rejects.toThrow(/busy is not empty.*--force/);
    await writeTinyCheckpoint({ dir: busy, force: true });
    expect(await readFile(join(busy, 'notes.txt'), 'utf8')).toBe('mine');
  });
});

describe('moka init-tiny', () => {
  it('writes a loadable directory, refuses to overwrite it, and overwrites with --force', async () => {
    const dir = join(root, 'cli');
    const r = runMoka([
      'init-tiny',
      '--out',
      dir,
      '--dtype',
      'bf16',
      '--shards',
      '2',
      '--tied',
      '--layers',
      '3',
      '--json',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ dtype: 'bfloat16', layers: 3, tiedEmbeddings: true, vocabSize: 512 });
    expect(summary.files).toContain('model.safetensors.index.json');
    const ck = await openCheckpoint(dir);
    expect(ck.weightFiles().length).toBe(2);
    expect(ck.info('model.norm.weight').dtype).toBe('BF16');
    expect(ck.config.numLayers).toBe(3);
    await ck.close();

    const again = runMoka(['init-tiny', '--out', dir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^moka: error: .*cli is not empty .*--force/);

    const forced = runMoka(['init-tiny', '--out', dir, '--force']);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/wrote .*cli: 2 layers, hidden 64, 4\/2 heads, vocab 512/);
    expect((await readdir(dir)).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
  });

  it('reports bad arguments in one line', () => {
    const r = runMoka(['init-tiny', '--out', join(root, 'bad'), '--dtype', 'int4']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('moka: error: --dtype must be f32, f16 or bf16, got "int4"');
  });
});
