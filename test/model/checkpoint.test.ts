// HF checkpoint directories: single and sharded layouts, dtype conversion on read, validation against config.json
// with messages that name the tensor, and the write order that makes an interrupted write detectable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  expectedTensorShapes,
  openCheckpoint,
  writeCheckpoint,
  type CheckpointTensorInput,
} from '../../lib/model/checkpoint.ts';
import { writeFileAtomic } from '../../lib/atomic-write.ts';
import { parseLlamaConfig } from '../../lib/model/config.ts';
import { decodeFloat32, encodeFloat32 } from '../../lib/model/dtype-convert.ts';
import { writeSafetensors, type SafetensorsTensor } from '../../lib/model/safetensors.ts';
import { tinyConfigJson, tinyTensorValues, writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { TINY_CHAT_TEMPLATE } from '../../lib/model/tiny-tokenizer.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-ckpt-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const tokenizerShape = { size: 512, bosId: 507, eosId: 508 };
function smallConfig(over: Record<string, unknown> = {}) {
  return {
    ...tinyConfigJson({ hiddenSize: 16, intermediateSize: 32, numLayers: 2 }, tokenizerShape),
    ...over,
  };
}

/** All tensors of a config, float32 values rounded through bf16 so f32 and bf16 files hold the same numbers. */
function bf16ExactTensors(configJson: Record<string, unknown>): Map<string, Float32Array> {
  const cfg = parseLlamaConfig(configJson);
  const out = new Map<string, Float32Array>();
  for (const [name, shape] of expectedTensorShapes(cfg)) {
    out.set(name, decodeFloat32('BF16', encodeFloat32('BF16', tinyTensorValues(3, name, shape))));
  }
  return out;
}

function inputs(
  configJson: Record<string, unknown>,
  values: Map<string, Float32Array>,
  dtype: 'F32' | 'BF16',
): Map<string, CheckpointTensorInput> {
  const shapes = expectedTensorShapes(parseLlamaConfig(configJson));
  return new Map([...values].map(([name, v]) => [name, { dtype, shape: shapes.get(name)!, data: v }]));
}

describe('reading', () => {
  it('a sharded bf16 checkpoint reads back the same float32 values as a single f32 file', async () => {
    const config = smallConfig();
    const values = bf16ExactTensors(config);
    const single = join(root, 'single-f32');
    const sharded = join(root, 'sharded-bf16');
    await writeCheckpoint(single, { config, tensors: inputs(config, values, 'F32') });
    const w = await writeCheckpoint(sharded, {
      config,
      tensors: inputs(config, values, 'BF16'),
      numShards: 3,
    });
    expect(w.files).toEqual([
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
      'config.json',
    ]);
    const index = JSON.parse(await readFile(join(sharded, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(w.totalSize);
    expect(Object.keys(index.weight_map).length).toBe(values.size);

    const a = await openCheckpoint(single);
    const b = await openCheckpoint(sharded);
    try {
      expect(a.weightFiles()).toEqual(['model.safetensors']);
      expect(b.weightFiles().length).toBe(3);
      expect(b.tensorNames().sort()).toEqual(a.tensorNames().sort());
      expect(new Set(b.tensorNames().map((n) => b.info(n).file)).size).toBe(3);
      for (const name of a.tensorNames()) {
        expect(a.info(name).dtype).toBe('F32');
        expect(b.info(name).dtype).toBe('BF16');
        const fa = await a.readFloat32(name);
        const fb = await b.readFloat32(name);
        expect(fb).toEqual(fa); // exact: the values were bf16-representable to begin with
        expect(fa).toEqual(values.get(name));
      }
      expect(b.config.hiddenSize).toBe(16);
      const raw = await b.readRaw('model.norm.weight');
      expect(raw.byteLength).toBe(16 * 2);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('byte-budget sharding starts a new shard before a tensor that would overflow it', async () => {
    const config = smallConfig();
    const dir = join(root, 'budget');
    const w = await writeCheckpoint(dir, {
      config,
      tensors: inputs(config, bf16ExactTensors(config), 'F32'),
      shardSizeBytes: 4096,
    });
    const shards = w.files.filter((f) => f.endsWith('.safetensors'));
    expect(shards.length).toBeGreaterThan(3);
    const ck = await openCheckpoint(dir);
    for (const s of shards) {
      // embed_tokens alone is 512·16·4 = 32 KiB: a tensor larger than the budget gets a shard of its own.
      const names = ck.tensorNames().filter((n) => ck.info(n).file === s);
      const bytes = names.reduce((acc, n) => acc + ck.info(n).byteLength, 0);
      expect(bytes <= 4096 || names.length === 1).toBe(true);
    }
    await ck.close();
  });

  it('ignores rotary_emb.inv_freq buffers and accepts a tied checkpoint without lm_head', async () => {
    const config = smallConfig({ tie_word_embeddings: true });
    const cfg = parseLlamaConfig(config);
    const tensors: SafetensorsTensor[] = [...expectedTensorShapes(cfg)].map(([name, shape]) => ({
      name,
      dtype: 'F16',
      shape,
      data: encodeFloat32('F16', tinyTensorValues(1, name, shape)),
    }));
    tensors.push({
      name: 'model.layers.0.self_attn.rotary_emb.inv_freq',
      dtype: 'F32',
      shape: [2],
      data: new Float32Array(2),
    });
    const dir = join(root, 'tied');
    await mkdir(dir);
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    const ck = await openCheckpoint(dir);
    expect(ck.has('lm_head.weight')).toBe(false);
    expect(ck.tensorNames().some((n) => n.includes('inv_freq'))).toBe(false);
    expect(ck.tensorNames().length).toBe(tensors.length - 1);
    expect(ck.tokenizerJson).toBeNull();
    expect(() => ck.tokenizer()).toThrow(/no tokenizer\.json/);
    await ck.close();
  });
});

describe('validation errors', () => {
  it('a tokenizer.json that is not UTF-8 is refused, not read with U+FFFD tokens', async () => {
    const dir = join(root, 'latin1-tokenizer');
    await writeTinyCheckpoint({ dir });
    const bytes = await readFile(join(dir, 'tokenizer.json'));
    // A vocabulary entry saved as Latin-1: one "e" of "<|begin_of_text|>" becomes the single byte 0xE9 ("é").
    const at = bytes.indexOf('<|begin_of_text|>') + '<|b'.length;
    expect(String.fromCharCode(bytes[at]!)).toBe('e');
    bytes[at] = 0xe9;
    await writeFile(join(dir, 'tokenizer.json'), bytes);
    await expect(openCheckpoint(dir)).rejects.toThrow(
      /latin1-tokenizer\/tokenizer\.json: the tokenizer is not valid UTF-8; re-download or fix it/,
    );
  });

  it('a tensor whose shape does not match config.json', async () => {
    const config = smallConfig();
    const dir = join(root, 'mismatch');
    await writeCheckpoint(dir, {
      config,
      tensors: inputs(config, bf16ExactTensors(config), 'BF16'),
      numShards: 2,
    });
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 48 }));
    await expect(openCheckpoint(dir)).rejects.toThrow(
      /mismatch: tensor shapes do not match config\.json: "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[32,16\], but config\.json implies \[48,16\].*intermediate_size=48/,
    );
  });

  it('missing tensors are listed by name', async () => {
    const config = smallConfig();
    const cfg = parseLlamaConfig(config);
    const dir = join(root, 'missing-tensor');
    await mkdir(dir);
    const tensors = [...expectedTensorShapes(cfg)]
      .filter(([name]) => !name.startsWith('model.layers.1.'))
      .map(([name, shape]) => ({
        name,
        dtype: 'F32' as const,
        shape,
        data: tinyTensorValues(0, name, shape),
      }));
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    await expect(openCheckpoint(dir)).rejects.toThrow(
      /9 tensor\(s\) a LLaMA with this config\.json needs are missing: "model\.layers\.1\.input_layernorm\.weight", .* and 4 more.*num_hidden_layers=2/,
    );
  });

  it('integer (pre-quantized) weights are refused as a base model', async () => {
    const config = smallConfig();
    const cfg = parseLlamaConfig(config);
    const dir = join(root, 'int-weights');
    await mkdir(dir);
    const tensors = [...expectedTensorShapes(cfg)].map(([name, shape]) => ({
      name,
      dtype: name.endsWith('q_proj.weight') ? ('I8' as const) : ('F32' as const),
      shape,
      data: name.endsWith('q_proj.weight')
        ? new Int8Array(shape[0]! * shape[1]!)
        : tinyTensorValues(0, name, shape),
    }));
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    await expect(openCheckpoint(dir)).rejects.toThrow(/"model\.layers\.0\.self_attn\.q_proj\.weight" \(I8\)/);
    const ck = await openCheckpoint(dir, { validate: false });
    expect(ck.info('model.layers.0.self_attn.q_proj.weight').dtype).toBe('I8');
    await ck.close();
  });

  it('an index that points to a missing shard, or to a shard without the tensor', async () => {
    const config = smallConfig();
    const dir = join(root, 'missing-shard');
    await writeCheckpoint(dir, {
      config,
      tensors: inputs(config, bf16ExactTensors(config), 'F32'),
      numShards: 2,
    });
    await rm(join(dir, 'model-00002-of-00002.safetensors'));
    await expect(openCheckpoint(dir)).rejects.toThrow(
      /model\.safetensors\.index\.json lists shard "model-00002-of-00002\.safetensors" \(holding "model\.layers\.1\..*\), but the file is missing; the download is incomplete/,
    );

    const dir2 = join(root, 'wrong-index');
    await writeCheckpoint(dir2, {
      config,
      tensors: inputs(config, bf16ExactTensors(config), 'F32'),
      numShards: 2,
    });
    const indexPath = join(dir2, 'model.safetensors.index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8'));
    index.weight_map['model.norm.weight'] = 'model-00001-of-00002.safetensors';
    await writeFile(indexPath, JSON.stringify(index));
    await expect(openCheckpoint(dir2)).rejects.toThrow(
      /places tensor "model\.norm\.weight" in "model-00001-of-00002\.safetensors", but that file has no such tensor/,
    );
  });

  it('missing directory, config.json or weights', async () => {
    await expect(openCheckpoint(join(root, 'nope'))).rejects.toThrow(/nope: no such directory/);
    const empty = join(root, 'empty');
    await mkdir(empty);
    await expect(openCheckpoint(empty)).rejects.toThrow(/empty: no config\.json/);
    await writeFile(join(empty, 'config.json'), JSON.stringify(smallConfig()));
    await expect(openCheckpoint(empty)).rejects.toThrow(
      /no model\.safetensors and no model\.safetensors\.index\.json\.$/,
    );
    await writeFile(join(empty, 'pytorch_model.bin'), 'x');
    await expect(openCheckpoint(empty)).rejects.toThrow(
      /Found PyTorch weights \("pytorch_model\.bin"\); convert them/,
    );
    await writeFile(join(empty, 'config.json'), '{"hidden_size": ');
    await expect(openCheckpoint(empty)).rejects.toThrow(/config\.json: the model config is not valid JSON/);
  });
});

describe('writing', () => {
  it('config.json is written last and removed first, so an interrupted write is detectable', async () => {
    const config = smallConfig();
    const dir = join(root, 'interrupted');
    await writeCheckpoint(dir, { config, tensors: inputs(config, bf16ExactTensors(config), 'F32') });
    // A second write whose tensor data fails midway: the old config.json is gone, so the directory reads as
    // incomplete rather than as a mix of old and new weights.
    const tensors = inputs(config, bf16ExactTensors(config), 'F32');
    tensors.set('model.norm.weight', {
      dtype: 'F32',
      shape: [16],
      data: () => {
        throw new Error('disk on fire');
      },
    });
    await expect(writeCheckpoint(dir, { config, tensors })).rejects.toThrow(/disk on fire/);
    expect(existsSync(join(dir, 'config.json'))).toBe(false);
    expect((await readdir(dir)).filter((e) => e.includes('.tmp-'))).toEqual([]);
    await expect(openCheckpoint(dir)).rejects.toThrow(/no config\.json.*interrupted/);
  });

  it('writeFileAtomic replaces a file whole, and a failed write leaves neither a change nor a temporary file', async () => {
    // The one atomic writer (training checkpoints use it too).
    const dir = join(root, 'atomic-file');
    await mkdir(dir, { recursive: true });
    const path = join(dir, 'state.json');
    await writeFileAtomic(path, '{"step": 1}\n');
    await writeFileAtomic(path, '{"step": 2}\n');
    expect(await readFile(path, 'utf8')).toBe('{"step": 2}\n');
    await expect(writeFileAtomic(path, 42 as unknown as string)).rejects.toThrow();
    expect(await readFile(path, 'utf8')).toBe('{"step": 2}\n');
    expect(await readdir(dir)).toEqual(['state.json']);
  });

  it('rewriting a directory in another layout removes the stale weight files', async () => {
    const config = smallConfig();
    const dir = join(root, 'relayout');
    const values = bf16ExactTensors(config);
    await writeCheckpoint(dir, { config, tensors: inputs(config, values, 'F32'), numShards: 3 });
    await writeCheckpoint(dir, { config, tensors: inputs(config, values, 'BF16') });
    expect((await readdir(dir)).sort()).toEqual(['config.json', 'model.safetensors']);
    await writeCheckpoint(dir, { config, tensors: inputs(config, values, 'BF16'), numShards: 2 });
    expect((await readdir(dir)).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
    ]);
    const ck = await openCheckpoint(dir);
    expect(await ck.readFloat32('model.norm.weight')).toEqual(values.get('model.norm.weight'));
    await ck.close();
  });

  it('refuses tensors that do not fit the config before writing anything', async () => {
    const config = smallConfig();
    const dir = join(root, 'refused');
    const tensors = inputs(config, bf16ExactTensors(config), 'F32');
    tensors.set('model.norm.weight', { dtype: 'F32', shape: [17], data: new Float32Array(17) });
    await expect(writeCheckpoint(dir, { config, tensors })).rejects.toThrow(
      /"model\.norm\.weight" has shape \[17\], but config\.json implies \[16\]/,
    );
    expect(existsSync(dir)).toBe(false);
    tensors.set('model.norm.weight', { dtype: 'F32', shape: [16], data: new Float32Array(15) });
    await expect(writeCheckpoint(dir, { config, tensors })).rejects.toThrow(
      /60 bytes given, but F32 \[16\] takes 64/,
    );
    await expect(
      writeCheckpoint(dir, {
        config,
        tensors: inputs(config, bf16ExactTensors(config), 'F32'),
        numShards: 100,
      }),
    ).rejects.toThrow(/cannot split 21 tensors into 100 shards/);
  });
});

describe('chat templates in files of their own', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
  ];

  it('reads chat_template.jinja (over the config field, as transformers does) and chat_template.json', async () => {
    const dir = join(root, 'chat-files');
    await writeTinyCheckpoint({ dir, seed: 2, hiddenSize: 16, intermediateSize: 32 });
    const configPath = join(dir, 'tokenizer_config.json');
    const withTemplate = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
    expect(withTemplate.chat_template).toBe(TINY_CHAT_TEMPLATE);
    const render = async () => {
      const ckpt = await openCheckpoint(dir);
      try {
        return ckpt.tokenizer().renderChat(messages, { addGenerationPrompt: true });
      } finally {
        await ckpt.close();
      }
    };
    const expected = await render();
    expect(expected).toContain('<|start_header_id|>assistant<|end_header_id|>');

    // What newer transformers save: the template moved out of tokenizer_config.json into chat_template.jinja.
    const { chat_template: _, ...withoutTemplate } = withTemplate;
    await writeFile(configPath, JSON.stringify(withoutTemplate));
    await writeFile(join(dir, 'chat_template.jinja'), TINY_CHAT_TEMPLATE);
    expect(await render()).toBe(expected);

    // The file wins over a template left in the config.
    await writeFile(configPath, JSON.stringify({ ...withoutTemplate, chat_template: 'STALE' }));
    expect(await render()).toBe(expected);

    // chat_template.json (processor style) when neither the config nor a .jinja file has one.
    await rm(join(dir, 'chat_template.jinja'));
    await writeFile(configPath, JSON.stringify(withoutTemplate));
    await writeFile(join(dir, 'chat_template.json'), JSON.stringify({ chat_template: TINY_CHAT_TEMPLATE }));
    expect(await render()).toBe(expected);
    await writeFile(configPath, JSON.stringify({ ...withoutTemplate, chat_template: 'CONFIG' }));
    expect(await render()).toBe('CONFIG');

    // None at all: a user error that says what to do; a broken file names itself.
    await rm(join(dir, 'chat_template.json'));
    await writeFile(configPath, JSON.stringify(withoutTemplate));
    await expect(render()).rejects.toThrow(/no chat template .*use a plain prompt format/);
    await writeFile(join(dir, 'chat_template.jinja'), '{% for m in messages %}');
    await expect(render()).rejects.toThrow(
      /chat_template\.jinja chat_template: the chat template does not parse/,
    );
  });
});
