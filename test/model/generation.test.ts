// Generation: the key/value cache gives exactly the tokens of full recomputation; sampling, stop strings, EOS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../lib/errors.ts';
import { generateText, generateTokens } from '../../lib/model/generation.ts';
import { StopStringMatcher } from '../../lib/model/stop-strings.ts';
import { KvCache } from '../../lib/model/kv-cache.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { argmax, chooseToken } from '../../lib/model/sampling.ts';
import { mulberry32 } from '../../lib/engine/random.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';

let root: string;
let model: LlamaModel;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-generate-'));
  await writeTinyCheckpoint({ dir: join(root, 'm'), seed: 8 });
  model = await LlamaModel.load(join(root, 'm'));
});
afterAll(async () => {
  await model.close();
  await rm(root, { recursive: true, force: true });
});

describe('generation with a key/value cache', () => {
  it('greedy: the cache produces exactly the tokens of re-running the prefix (40 new tokens)', async () => {
    // A 14-token prompt and 40 new tokens cross the padded lengths 16 → 32 → 64 on the recompute path.
    const prompt = model.tokenizer().encode('The model is evaluated on tasks');
    const cached = await generateTokens(model, prompt, { maxNewTokens: 40, eosIds: [] });
    const full = await generateTokens(model, prompt, { maxNewTokens: 40, eosIds: [], useCache: false });
    expect(cached.tokens).toHaveLength(40);
    expect(cached.tokens).toEqual(full.tokens);
    expect(cached.stopReason).toBe('length');
    expect(new Set(cached.tokens).size).toBeGreaterThan(3); // not a degenerate constant output
  });

  it('each decode step gives the logits of the full forward at that position', async () => {
    const seq = [5, 17, 99, 250, 3, 77, 410, 12, 8];
    const full = (await model.logits([seq]))[0]!;
    const V = model.config.vocabSize;
    const cache = model.newCache(seq.length);
    let logits = await model.prefill(seq.slice(0, 4), cache);
    for (let t = 4; t <= seq.length; t++) {
      const want = full.subarray((t - 1) * V, t * V);
      let err = 0;
      for (let i = 0; i < V; i++) err = Math.max(err, Math.abs(logits[i]! - want[i]!));
      expect(err).toBeLessThan(1e-5);
      if (t < seq.length) logits = await model.decodeStep(seq[t]!, cache);
    }
    expect(cache.length).toBe(seq.length);
  });

  it('sampling is reproducible per seed, and the cache does not change the sample', async () => {
    const prompt = [1, 40, 41, 42];
    const opts = { maxNewTokens: 24, eosIds: [], temperature: 0.8, topK: 50, topP: 0.95 };
    const a = await generateTokens(model, prompt, { ...opts, seed: 7 });
    const b = await generateTokens(model, prompt, { ...opts, seed: 7 });
    const c = await generateTokens(model, prompt, { ...opts, seed: 8 });
    const d = await generateTokens(model, prompt, { ...opts, seed: 7, useCache: false });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
    expect(a.tokens).toEqual(d.tokens);
    // top-k = 1 is greedy whatever the temperature.
    const greedy = await generateTokens(model, prompt, { maxNewTokens: 10, eosIds: [] });
    const k1 = await generateTokens(model, prompt, {
      maxNewTokens: 10,
      eosIds: [],
      temperature: 2,
      topK: 1,
      seed: 3,
    });
    expect(k1.tokens).toEqual(greedy.tokens);
  });

  it('stops at an EOS id (excluded from the result) and at a stop string (text cut before it)', async () => {
    const prompt = [1, 100, 200];
    const free = await generateTokens(model, prompt, { maxNewTokens: 30, eosIds: [] });
    const eos = await generateTokens(model, prompt, { maxNewTokens: 30, eosIds: [free.tokens[5]!] });
    expect(eos.stopReason).toBe('eos');
    expect(eos.tokens).toEqual(free.tokens.slice(0, free.tokens.indexOf(free.tokens[5]!)));

    const text = free.text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
    const cut = await generateTokens(model, prompt, { maxNewTokens: 30, eosIds: [], stopStrings: [stop] });
    expect(cut.stopReason).toBe('stop');
    expect(cut.stopString).toBe(stop);
    expect(cut.text).toBe(text.slice(0, text.indexOf(stop)));
    expect(free.tokens.slice(0, cut.tokens.length)).toEqual(cut.tokens);
  });

  it('a stop string far into a long continuation cuts at the token that completes it', async () => {
    const prompt = [1, 60, 61];
    const free = await generateTokens(model, prompt, { maxNewTokens: 60, eosIds: [] });
    const tok = model.tokenizer();
    const decoded = (k: number) => tok.decode(free.tokens.slice(0, k), { skipSpecialTokens: true });
    // A 5-character stop string taken from late in the text (past the first decoding window of tokens).
    const from = Math.floor(free.text.length * 0.8);
    const stop = free.text.slice(from, from + 5);
    const cut = await generateTokens(model, prompt, { maxNewTokens: 60, eosIds: [], stopStrings: [stop] });
    let k = 1;
    while (!decoded(k).includes(stop)) k++;
    expect(k).toBeGreaterThan(20);
    expect(cut.stopReason).toBe('stop');
    expect(cut.tokens).toEqual(free.tokens.slice(0, k));
    expect(cut.text).toBe(free.text.slice(0, free.text.indexOf(stop)));
  });

  it('the checkpoint EOS ids come from config.json and generation_config.json', () => {
    const tok = model.tokenizer();
    expect(model.eosIds()).toContain(tok.eosId);
    expect(model.eosIds()).toContain(tok.tokenToId('<|eot_id|>'));
  });

  it('chat prompts go through the chat template', async () => {
    const chat = await generateText(model, 'Hi', { chat: true, maxNewTokens: 3, eosIds: [] });
    const tok = model.tokenizer();
    const ids = tok.encodeChat([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
    expect(chat.promptTokens).toBe(ids.length);
    expect(chat.tokens).toEqual((await generateTokens(model, ids, { maxNewTokens: 3, eosIds: [] })).tokens);
  });

  it('rejects bad options and over-long requests with UserError', async () => {
    await expect(generateTokens(model, [], {})).rejects.toThrow(/prompt is empty/);
    await expect(generateTokens(model, [1], { temperature: -1 })).rejects.toThrow(UserError);
    await expect(generateTokens(model, [1], { topP: 0 })).rejects.toThrow(/top-p/);
    await expect(generateTokens(model, [1], { maxNewTokens: 5000 })).rejects.toThrow(
      /max_position_embeddings/,
    );
  });
});

describe('generation with an embedding padded past the tokenizer', () => {
  it('never chooses an id the tokenizer cannot decode (vocab_size 1024, 512 tokens)', async () => {
    await writeTinyCheckpoint({ dir: join(root, 'padded'), seed: 3, vocabSize: 1024 });
    const padded = await LlamaModel.load(join(root, 'padded'));
    try {
      expect(padded.config.vocabSize).toBe(1024);
      const vocab = padded.tokenizer().vocabSize;
      expect(vocab).toBe(512);
      // The padded rows are random like the others: without the mask about half the draws would land there.
      const row = await padded.lastLogits([1, 40, 41]);
      expect(Math.max(...row.subarray(vocab))).toBeGreaterThan(Math.max(...row.subarray(0, vocab)) - 1);
      const prompt = padded.tokenizer().encode('Hello');
      for (const opts of [{ temperature: 1, seed: 1 }, { temperature: 5, seed: 2 }, {}]) {
        const r = await generateTokens(padded, prompt, { ...opts, maxNewTokens: 40, eosIds: [] });
        expect(r.tokens).toHaveLength(40);
        expect(Math.max(...r.tokens)).toBeLessThan(vocab);
        expect(typeof r.text).toBe('string');
      }
    } finally {
      await padded.close();
    }
  });
});

describe('StopStringMatcher', () => {
  it('stops at the same token as decoding everything, across multi-byte characters', () => {
    const tok = model.tokenizer();
    const text =
      'The quick brown fox jumps over the lazy dog. Grüße aus Köln — 日本語のテキスト 🎉👩‍👩‍👧 and ' +
      'a naïve café. '.repeat(6) +
      'Then the end: ✓ done';
    const ids = tok.encode(text, { addSpecialTokens: false });
    const decode = (x: readonly number[]) => tok.decode(x, { skipSpecialTokens: true });
    const prompt = [tok.bosId!];
    for (const stops of [['日本'], ['🎉'], ['ße a'], ['✓ done'], ['Köln', 'fox'], ['café. a'], ['absent']]) {
      const matcher = new StopStringMatcher(tok, stops, prompt);
      let got: { at: number; text: string; stop: string } | null = null;
      for (let k = 1; k <= ids.length && !got; k++) {
        const hit = matcher.check(ids.slice(0, k));
        if (hit) got = { at: k, text: hit.text, stop: hit.stop };
      }
      // Reference: decode the whole prefix after every token.
      let want: { at: number; text: string; stop: string } | null = null;
      for (let k = 1; k <= ids.length && !want; k++) {
        const t = decode(ids.slice(0, k));
        const found = stops
          .map((s) => ({ at: k, cut: t.indexOf(s), stop: s }))
          .filter((f) => f.cut >= 0)
          .sort((a, b) => a.cut - b.cut)[0];
        if (found) want = { at: k, text: t.slice(0, found.cut), stop: found.stop };
      }
      expect(got).toEqual(want);
      if (stops[0] !== 'absent') expect(want).not.toBeNull();
    }
  });
});

describe('KvCache', () => {
  it('stores positions per batch row and head, and masks unused slots', () => {
    const c = new KvCache(1, 2, 3, 4);
    // source [1, 2 heads, 2 positions, 3]
    const src = Float32Array.from({ length: 12 }, (_, i) => i + 1);
    c.write([src], [src], 2, 2, 1);
    expect([...c.keys[0]!]).toEqual([
      0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0, 0,
    ]);
    expect(c.length).toBe(3);
    expect([...c.attentionMask(1)]).toEqual([1n, 1n, 1n, 0n, 1n]);
    expect(() => c.write([src], [src], 2, 2, 3)).toThrow(RangeError);
  });
});

describe('sampling', () => {
  it('argmax takes the first maximum; top-k and top-p keep only their candidates', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    const logits = [Math.log(0.6), Math.log(0.3), Math.log(0.06), Math.log(0.04)];
    const rand = mulberry32(1);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[chooseToken(logits, { temperature: 1 }, rand)]!++;
    // Plain sampling follows the distribution (±3.5σ with n = 4000).
    expect(Math.abs(counts[0]! / 4000 - 0.6)).toBeLessThan(0.03);
    expect(counts[3]).toBeGreaterThan(0);
    for (let i = 0; i < 500; i++) {
      expect(chooseToken(logits, { temperature: 1, topP: 0.5 }, rand)).toBe(0);
      expect(chooseToken(logits, { temperature: 1, topK: 2 }, rand)).toBeLessThan(2);
      // 0.6 + 0.3 reaches 0.85: the nucleus is {0, 1}.
      expect(chooseToken(logits, { temperature: 1, topP: 0.85 }, rand)).toBeLessThan(2);
    }
  });

  it('sampling keeps the 50 most likely tokens by default (transformers GenerationConfig.top_k); 0 keeps all', () => {
    // 60 equally likely tokens: ties keep index order, so the top 50 are ids 0…49.
    const flat = new Array<number>(60).fill(0);
    const rand = mulberry32(2);
    const drawn = Array.from({ length: 3000 }, () => chooseToken(flat, { temperature: 1 }, rand));
    expect(Math.max(...drawn)).toBe(49);
    const all = Array.from({ length: 3000 }, () => chooseToken(flat, { temperature: 1, topK: 0 }, rand));
    expect(Math.max(...all)).toBe(59);
  });
});
