// The streaming quantizer end to end on generated tiny checkpoints: output layout and config, the summary,
// reading the result back (exactly the codec's values), dequantize, refusals, and no half-written output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyCheckpoint, tinyTensorValues } from '../../lib/model/tiny-checkpoint.ts';
import { openCheckpoint, writeCheckpoint, type CheckpointTensorInput } from '../../lib/model/checkpoint.ts';
import { loadModelWeights } from '../../lib/model/model-weights.ts';
import { openSafetensors } from '../../lib/model/safetensors.ts';
import { quantizeCheckpoint, SUMMARY_FILE } from '../../lib/quant/quantize-checkpoint.ts';
import { dequantizeCheckpoint } from '../../lib/quant/dequantize-checkpoint.ts';
import { openQuantizedCheckpoint } from '../../lib/quant/quantized-checkpoint.ts';
import { dequantizeNf4, quantizeNf4 } from '../../lib/quant/nf4.ts';
import { dequantizeInt4, quantizeInt4 } from '../../lib/quant/int4.ts';
import { isUserError } from '../../lib/errors.ts';

let root: string;
let model: string; // bf16, untied, 2 layers
let sharded: string; // f32, 3 shards, tied embeddings

const Q = 'model.layers.1.self_attn.q_proj.weight';

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-quant-'));
  model = join(root, 'model');
  sharded = join(root, 'sharded');
  await writeTinyCheckpoint({ dir: model, seed: 1, dtype: 'bfloat16', hiddenSize: 64, intermediateSize: 96 });
  await writeTinyCheckpoint({
    dir: sharded,
    seed: 2,
    shards: 3,
    tieWordEmbeddings: true,
    intermediateSize: 80,
  });
  await writeFile(join(model, 'LICENSE'), 'tiny licence\n');
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function rejects(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** Every entry of `root` that starts with `prefix` (to catch leftover temporary directories). */
async function siblings(prefix: string): Promise<string[]> {
  return (await readdir(root)).filter((e) => e.startsWith(prefix));
}

describe('quantizeCheckpoint (NF4)', () => {
  it('writes a transformers-loadable layout: packed projections, 16-bit rest, quantization_config, sidecars', async () => {
    const out = join(root, 'nf4');
    const events: string[] = [];
    const summary = await quantizeCheckpoint({
      modelDir: model,
      outDir: out,
      format: 'nf4',
      doubleQuant: true,
      onProgress: (e) => events.push(e.phase),
    });
    const files = (await readdir(out)).sort();
    expect(files).toEqual(
      [
        'LICENSE',
        'config.json',
        'generation_config.json',
        'model.safetensors',
        SUMMARY_FILE,
        'tokenizer.json',
        'tokenizer_config.json',
      ].sort(),
    );
    expect(await readFile(join(out, 'LICENSE'), 'utf8')).toBe('tiny licence\n');
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.quantization_config).toMatchObject({
      quant_method: 'bitsandbytes',
      load_in_4bit: true,
      bnb_4bit_quant_type: 'nf4',
      bnb_4bit_use_double_quant: true,
      bnb_4bit_compute_dtype: 'bfloat16',
      llm_int8_skip_modules: null,
    });
    expect(config.hidden_size).toBe(64);

    const st = await openSafetensors(join(out, 'model.safetensors'));
    try {
      expect(st.info(Q)).toMatchObject({ dtype: 'U8', shape: [(64 * 64) / 2, 1] });
      expect(st.info(`${Q}.absmax`)).toMatchObject({ dtype: 'U8', shape: [64] });
      expect(st.has(`${Q}.quant_state.bitsandbytes__nf4`)).toBe(true);
      expect(st.info('model.embed_tokens.weight').dtype).toBe('BF16');
      expect(st.info('lm_head.weight').dtype).toBe('BF16');
      expect(st.info('model.norm.weight').dtype).toBe('BF16');
      expect(st.metadata).toEqual({ format: 'pt' });
    } finally {
      await st.close();
    }

    expect(summary.layers).toHaveLength(14);
    expect(summary.kept).toHaveLength(2 * 2 + 3);
    for (const l of summary.layers) {
      expect(l.relativeError).toBeGreaterThan(0.07);
      expect(l.relativeError).toBeLessThan(0.12);
    }
    expect(summary.decoderLayers.map((d) => d.layer)).toEqual([0, 1]);
    // 4 bits + scales, plus ~150 bytes of quant_map and JSON per weight: a lot for 64 × 64 weights, ~0 for real ones.
    expect(summary.totals.bitsPerQuantizedWeight).toBeGreaterThan(4.127);
    expect(summary.totals.bitsPerQuantizedWeight).toBeLessThan(8);
    expect(summary.timing.throughputMBps).toBeGreaterThan(0);
    expect(summary.source.contentSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.parse(await readFile(join(out, SUMMARY_FILE), 'utf8'))).toEqual(summary);
    expect(events).toContain('quantize');
    expect(events.at(-1)).toBe('write');
    expect(await siblings('nf4.')).toEqual([]);
  });

  it('stores exactly what the codec computes from the source values', async () => {
    const q = await openQuantizedCheckpoint(join(root, 'nf4'));
    try {
      expect(q.format).toBe('nf4');
      expect(q.quantizedWeightNames()).toHaveLength(14);
      expect(q.info(Q)).toEqual({ name: Q, dtype: 'BF16', shape: [64, 64], quantized: true });
      const source = await openCheckpoint(model);
      const values = await source.readFloat32(Q);
      await source.close();
      const expected = dequantizeNf4(quantizeNf4(values, [64, 64], { doubleQuant: true, dtype: 'BF16' }));
      expect(await q.readFloat32(Q)).toEqual(expected);
      // Kept tensors come back bit for bit.
      const src = await openCheckpoint(model);
      expect(await q.readRaw('model.norm.weight')).toEqual(await src.readRaw('model.norm.weight'));
      await src.close();
    } finally {
      await q.close();
    }
  });

  it('dequantizes back to a plain checkpoint openCheckpoint accepts, in the original dtype by default', async () => {
    const out = join(root, 'nf4-deq');
    const r = await dequantizeCheckpoint({ modelDir: join(root, 'nf4'), outDir: out });
    expect(r.dtype).toBe('BF16');
    expect(r.dequantizedWeights).toBe(14);
    const back = await openCheckpoint(out);
    const q = await openQuantizedCheckpoint(join(root, 'nf4'));
    try {
      expect(back.config.raw.quantization_config).toBeUndefined();
      expect(back.info(Q).dtype).toBe('BF16');
      // bf16 of the dequantized values (bf16 holds them to 2^-8 relative).
      const want = await q.readFloat32(Q);
      const got = await back.readFloat32(Q);
      for (let i = 0; i < want.length; i++)
        expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) / 256);
      expect(back.tokenizerJson).not.toBeNull();
    } finally {
      await back.close();
      await q.close();
    }
  });
});

describe('quantizeCheckpoint (int4, sharded, tied)', () => {
  it('writes MatMulNBits tensors, shards with an index, and reads back the codec values', async () => {
    const out = join(root, 'int4');
    const summary = await quantizeCheckpoint({
      modelDir: sharded,
      outDir: out,
      format: 'int4',
      blockSize: 32,
      symmetric: true,
      maxShardBytes: 40_000,
    });
    const files = await readdir(out);
    expect(files).toContain('model.safetensors.index.json');
    expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.quantization_config).toMatchObject({
      quant_method: 'moka',
      quant_type: 'int4',
      block_size: 32,
      symmetric: true,
      layout: 'com.microsoft.MatMulNBits',
      modules_not_converted: [],
    });
    expect(summary.format).toBe('int4');
    const q = await openQuantizedCheckpoint(out);
    try {
      const name = 'model.layers.0.mlp.down_proj.weight';
      const w = await q.readQuantized(name);
      expect(w.format).toBe('int4');
      const values = tinyTensorValues(2, name, [64, 80]);
      expect(await q.readFloat32(name)).toEqual(
        dequantizeInt4(quantizeInt4(values, [64, 80], { blockSize: 32, symmetric: true })),
      );
    } finally {
      await q.close();
    }
  });

  it('quantizes lm_head only when asked, and records it in llm_int8_skip_modules', async () => {
    const out = join(root, 'nf4-head');
    const s = await quantizeCheckpoint({ modelDir: model, outDir: out, format: 'nf4', quantizeLmHead: true });
    expect(s.layers.map((l) => l.name)).toContain('lm_head.weight');
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.quantization_config.llm_int8_skip_modules).toEqual([]);
  });

  // tie_word_embeddings decides what the head is, not whether a file happens to hold an lm_head.weight.
  it('a tied model that ships an lm_head.weight copy: --quantize-lm-head is refused, the copy is never loaded', async () => {
    const src = await openCheckpoint(sharded);
    const tensors = new Map<string, CheckpointTensorInput>();
    for (const n of src.tensorNames()) {
      tensors.set(n, { dtype: 'F32', shape: [...src.info(n).shape], data: await src.readFloat32(n) });
    }
    const embed = src.info('model.embed_tokens.weight');
    // A head that differs from the embedding: were it used, logits would change.
    tensors.set('lm_head.weight', {
      dtype: 'F32',
      shape: [...embed.shape],
      data: new Float32Array(512 * 64).fill(3),
    });
    const withCopy = join(root, 'tied-with-head');
    await writeCheckpoint(withCopy, { config: src.config.raw, tensors, tokenizerJson: src.tokenizerJson });
    await src.close();

    const out = join(root, 'tied-head-q');
    const err = await rejects(
      quantizeCheckpoint({ modelDir: withCopy, outDir: out, format: 'nf4', quantizeLmHead: true }),
    );
    expect(isUserError(err)).toBe(true);
    expect(err.message).toMatch(
      /--quantize-lm-head: .*ties the output head to the input embedding \(tie_word_embeddings: true\).*lm_head\.weight in the files is an unused copy/,
    );
    expect(await siblings('tied-head-q')).toEqual([]);
    // Further variant: loading the model for generate/score/train does not read (or hold) the unused copy.
    const ckpt = await openCheckpoint(withCopy);
    const weights = await loadModelWeights(ckpt);
    expect(weights.has('lm_head.weight')).toBe(false);
    expect(weights.has('model.embed_tokens.weight')).toBe(true);
    await ckpt.close();
  });
});

describe('quantizeCheckpoint refusals and atomicity', () => {
  it('refuses bad options with one-line UserErrors', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { format: 'nf4', blockSize: 48 },
        /--block-size 48 is not supported for nf4: use a power of two among 32/,
      ],
      [
        { format: 'int4', blockSize: 512 },
        /--block-size 512 is not supported for int4.*16, 32, 64, 128, 256/,
      ],
      [{ format: 'int4', doubleQuant: true }, /--double-quant applies to nf4 only/],
      [{ format: 'nf4', symmetric: true }, /--symmetric applies to int4 only/],
      [{ format: 'fp8' }, /unknown format "fp8"/],
    ];
    for (const [extra, message] of cases) {
      const err = await rejects(
        quantizeCheckpoint({ modelDir: model, outDir: join(root, 'bad'), ...extra } as never),
      );
      expect(isUserError(err)).toBe(true);
      expect(err.message).toMatch(message);
      expect(err.message).not.toContain('\n');
    }
    expect(await siblings('bad')).toEqual([]);
  });

  it('refuses an output directory holding a different model, unless --force', async () => {
    const out = join(root, 'taken');
    await quantizeCheckpoint({ modelDir: sharded, outDir: out, format: 'nf4' });
    const err = await rejects(quantizeCheckpoint({ modelDir: model, outDir: out, format: 'nf4' }));
    expect(isUserError(err)).toBe(true);
    expect(err.message).toMatch(/already holds a quantization of a different model.*--force/);
    // Re-quantizing the same model there is fine (e.g. with other options)…
    await quantizeCheckpoint({ modelDir: sharded, outDir: out, format: 'int4' });
    expect(JSON.parse(await readFile(join(out, SUMMARY_FILE), 'utf8')).format).toBe('int4');
    // …and --force replaces anything.
    await quantizeCheckpoint({ modelDir: model, outDir: out, format: 'nf4', force: true });
    expect(JSON.parse(await readFile(join(out, SUMMARY_FILE), 'utf8')).source.dir).toBe(model);
    const other = join(root, 'other');
    await mkdir(other);
    await writeFile(join(other, 'notes.txt'), 'mine');
    const err2 = await rejects(quantizeCheckpoint({ modelDir: model, outDir: other, format: 'nf4' }));
    expect(err2.message).toMatch(/already holds 1 other file\(s\) \(notes\.txt\)/);
    expect(await siblings('taken.')).toEqual([]);
  });

  it('refuses a truncated shard before writing anything', async () => {
    const bad = join(root, 'corrupt');
    await writeTinyCheckpoint({ dir: bad, seed: 3 });
    const path = join(bad, 'model.safetensors');
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, bytes.length - 1000));
    const err = await rejects(
      quantizeCheckpoint({ modelDir: bad, outDir: join(root, 'from-corrupt'), format: 'nf4' }),
    );
    expect(isUserError(err)).toBe(true);
    expect(err.message).toMatch(/model\.safetensors: .*run past the end of the data/);
    expect(await siblings('from-corrupt')).toEqual([]);
  });

  it('leaves no half-written output when a run dies mid-write, and keeps the directory it was replacing', async () => {
    const crash = (phase: string) => (e: { phase: string }) => {
      if (e.phase === phase) throw new Error('simulated crash');
    };
    const fresh = join(root, 'crashed');
    for (const phase of ['quantize', 'write']) {
      const err = await rejects(
        quantizeCheckpoint({ modelDir: model, outDir: fresh, format: 'nf4', onProgress: crash(phase) }),
      );
      expect(err.message).toBe('simulated crash');
      expect(await siblings('crashed')).toEqual([]);
    }
    const existing = join(root, 'kept-on-crash');
    const first = await quantizeCheckpoint({ modelDir: model, outDir: existing, format: 'nf4' });
    await rejects(
      quantizeCheckpoint({ modelDir: model, outDir: existing, format: 'int4', onProgress: crash('write') }),
    );
    expect(JSON.parse(await readFile(join(existing, SUMMARY_FILE), 'utf8'))).toEqual(first);
    expect(await siblings('kept-on-crash')).toEqual(['kept-on-crash']);
  });

  it('rejects a non-finite weight naming the tensor, and an already-quantized model', async () => {
    const nan = join(root, 'nan');
    await writeTinyCheckpoint({ dir: nan, seed: 4 });
    const ckpt = await openCheckpoint(nan);
    const name = 'model.layers.0.mlp.up_proj.weight';
    const { byteLength } = ckpt.info(name);
    await ckpt.close();
    // Overwrite one float32 of up_proj with NaN by locating the tensor in the file.
    const st = await openSafetensors(join(nan, 'model.safetensors'));
    const offset = st.info(name).dataOffsets[0];
    const dataStart = st.fileSize - [...st.names()].reduce((a, n) => a + st.info(n).byteLength, 0);
    await st.close();
    const file = await readFile(join(nan, 'model.safetensors'));
    new DataView(file.buffer, file.byteOffset).setFloat32(dataStart + offset + 4 * 7, NaN, true);
    await writeFile(join(nan, 'model.safetensors'), file);
    expect(byteLength).toBeGreaterThan(0);
    const err = await rejects(
      quantizeCheckpoint({ modelDir: nan, outDir: join(root, 'nan-out'), format: 'nf4' }),
    );
    expect(err.message).toMatch(/tensor "model\.layers\.0\.mlp\.up_proj\.weight" holds a non-finite weight/);
    expect(await siblings('nan-out')).toEqual([]);

    const again = await rejects(
      quantizeCheckpoint({ modelDir: join(root, 'nf4'), outDir: join(root, 'x'), format: 'nf4' }),
    );
    expect(isUserError(again)).toBe(true);
    expect(again.message).toMatch(
      /nf4 is already quantized \(nf4\); quantize the original 16-bit model instead$/,
    );
  });
});
