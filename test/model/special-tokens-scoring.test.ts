// Scoring whatever special tokens the tokenizer adds or the text carries (issue 10, items 1 and 4), the decoding
// defaults of current transformers (item 3) and the no-BOS notice (item 8), on the generated tokenizer and on the
// real LLaMA-2 and Llama 3 / 3.1 files. Scores are checked against a float64 forward (reference-llama.ts) fed ids
// that are computed independently: the raw @huggingface/tokenizers encoding of each text on its own, or ids looked
// up in the vocabulary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { openCheckpoint } from '../../lib/model/checkpoint.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { scoreContinuations } from '../../lib/model/scoring.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { buildTinyTokenizer } from '../../lib/model/tiny-tokenizer.ts';
import { ContinuationMergedError, Tokenizer } from '../../lib/model/tokenizer.ts';
import {
  llama2Files,
  llama3Files,
  tokenizerOf,
  writeModelWithTokenizer,
} from '../helpers/real-tokenizers.ts';
import { referenceForward, referenceWeights } from './reference-llama.ts';

/** The unmodified real tokenizers, loaded once for the whole file (a 128k-token load takes a second or two). */
let llama31: Tokenizer | null = null;
const llama31Tok = () => (llama31 ??= tokenizerOf(llama3Files('3.1')));

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-special-scoring-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Σ log softmax over the continuation in float64, from the reference forward of context + continuation. */
async function referenceScore(dir: string, context: number[], continuation: number[]): Promise<number> {
  const ckpt = await openCheckpoint(dir);
  try {
    const w = await referenceWeights(ckpt);
    const seq = [...context, ...continuation];
    const V = w.config.vocabSize;
    const logits = referenceForward(w, seq.slice(0, -1));
    let sum = 0;
    for (let j = context.length; j < seq.length; j++) {
      const row = logits.subarray((j - 1) * V, j * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let z = 0;
      for (const v of row) z += Math.exp(v - max);
      sum += row[seq[j]!]! - max - Math.log(z);
    }
    return sum;
  } finally {
    await ckpt.close();
  }
}

async function editTokenizerConfig(dir: string, edit: (c: Record<string, unknown>) => void): Promise<void> {
  const path = join(dir, 'tokenizer_config.json');
  const c = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  edit(c);
  await writeFile(path, JSON.stringify(c));
}

async function scoreOne(dir: string, context: string, continuation: string) {
  const model = await LlamaModel.load(dir);
  try {
    const pair = model.tokenizer().encodeContextContinuation(context, continuation);
    const [r] = await scoreContinuations(model, [{ context, continuation }]);
    return { ...r!, ...pair };
  } finally {
    await model.close();
  }
}

describe('the init-tiny model of the issue: "The sky is" + " blue"', () => {
  // Independent ids: the tokenizer library's own encoding of each text, without special tokens.
  const tiny = buildTinyTokenizer();
  const raw = new HfTokenizer(tiny.tokenizerJson, {});
  const ctx = raw.encode('The sky is', { add_special_tokens: false }).ids;
  const blue = raw.encode(' blue', { add_special_tokens: false }).ids;
  const variants: [string, (c: Record<string, unknown>) => void, boolean][] = [
    ['default (BOS from the post-processor)', () => {}, true],
    ['add_eos_token: true', (c) => (c.add_eos_token = true), true],
    ['add_bos_token: false', (c) => (c.add_bos_token = false), false],
    [
      'add_bos_token: false and add_eos_token: true',
      (c) => Object.assign(c, { add_bos_token: false, add_eos_token: true }),
      false,
    ],
  ];

  it.each(variants)('%s: the continuation is the tokens of " blue", never EOS', async (name, edit, bos) => {
    const dir = join(root, `issue-${name.replace(/\W+/g, '-')}`);
    await writeTinyCheckpoint({ dir }); // moka init-tiny's defaults: seed 0, 2 layers, hidden 64
    await editTokenizerConfig(dir, edit);
    const got = await scoreOne(dir, 'The sky is', ' blue');
    const context = bos ? [tiny.bosId, ...ctx] : ctx;
    expect(got.context).toEqual(context);
    expect(got.continuation).toEqual(blue);
    const want = await referenceScore(dir, context, blue);
    // float32 graph vs float64 reference: |Δ| ~1e-6 per token.
    expect(Math.abs(got.loglik - want)).toBeLessThan(1e-4);
    // The issue's value with BOS (-25.415, 3 decimals); before the fix add_eos_token gave -25.607.
    if (bos) expect(Math.abs(got.loglik - -25.415)).toBeLessThan(1e-3);
  });

  it('a post-processor that adds EOS itself, a context carrying BOS, a continuation carrying <|eot_id|>', async () => {
    const dir = join(root, 'template-eos');
    await writeTinyCheckpoint({ dir });
    const jsonPath = join(dir, 'tokenizer.json');
    const json = JSON.parse(await readFile(jsonPath, 'utf8'));
    const tp = json.post_processor.processors[1];
    tp.single.push({ SpecialToken: { id: '<|end_of_text|>', type_id: 0 } });
    tp.special_tokens['<|end_of_text|>'] = {
      id: '<|end_of_text|>',
      ids: [tiny.eosId],
      tokens: ['<|end_of_text|>'],
    };
    await writeFile(jsonPath, JSON.stringify(json));
    const model = await LlamaModel.load(dir);
    try {
      const tok = model.tokenizer();
      expect(tok.suffixIds).toEqual([tiny.eosId]);
      expect(tok.encode('The sky is').at(-1)).toBe(tiny.eosId);
      const plain = tok.encodeContextContinuation('The sky is', ' blue');
      expect(plain).toEqual({ context: [tiny.bosId, ...ctx], continuation: blue });
      expect(tok.encodeContextContinuation('<|begin_of_text|>The sky is', ' blue')).toEqual(plain);
      const eot = tok.encodeContextContinuation('The sky is', ' blue<|eot_id|>');
      expect(eot.continuation).toEqual([...blue, tiny.eotId]);
      const [a, b] = await scoreContinuations(model, [
        { context: 'The sky is', continuation: ' blue' },
        { context: 'The sky is', continuation: ' blue<|eot_id|>' },
      ]);
      expect(Math.abs(a!.loglik - (await referenceScore(dir, plain.context, blue)))).toBeLessThan(1e-4);
      const withEot = await referenceScore(dir, plain.context, [...blue, tiny.eotId]);
      expect(Math.abs(b!.loglik - withEot)).toBeLessThan(1e-4);
    } finally {
      await model.close();
    }
  });
});

describe('real tokenizers: the continuation is exactly its tokens', () => {
  it('Llama 3.1 with add_eos_token: scores match the reference on independent ids', async () => {
    const files = llama3Files('3.1');
    files.tokenizerConfig.add_eos_token = true;
    const dir = join(root, 'llama31');
    await writeModelWithTokenizer(dir, files, { seed: 5 });
    // Each text encoded on its own (the unmodified tokenizer, no special tokens added).
    const plain = (t: string) => llama31Tok().encode(t, { addSpecialTokens: false });
    const ctx = [128000, ...plain('Question: What color is the sky?\nAnswer:')];
    const cont = plain(' blue');
    const got = await scoreOne(dir, 'Question: What color is the sky?\nAnswer:', ' blue');
    expect(got.context).toEqual(ctx);
    expect(got.continuation).toEqual(cont);
    expect(got.continuation).not.toContain(128009); // eos_token <|eot_id|> is never scored
    expect(Math.abs(got.loglik - (await referenceScore(dir, ctx, cont)))).toBeLessThan(1e-4);
  });

  it('LLaMA-2 (SentencePiece) with add_eos_token: " blue" after "The sky is" is the single token ▁blue', async () => {
    const files = await llama2Files();
    files.tokenizerConfig.add_eos_token = true;
    const tok = tokenizerOf(files);
    const id = (t: string) => tok.tokenToId(t)!;
    expect(tok.encode('The sky is')).toEqual([1, id('▁The'), id('▁sky'), id('▁is'), 2]);
    const pair = tok.encodeContextContinuation('The sky is ', 'blue');
    expect(pair).toEqual({ context: [1, id('▁The'), id('▁sky'), id('▁is')], continuation: [id('▁blue')] });
    // The continuation encoded on its own would be [▁, ▁blue] (the normalizer prepends ▁): never used.
    expect(tok.encode(' blue', { addSpecialTokens: false })).toEqual([id('▁'), id('▁blue')]);
  });

  it('the first Llama 3 release adds no BOS: contexts start without it, and a notice says so', () => {
    const tok = tokenizerOf(llama3Files('3'));
    expect(tok.prefixIds).toEqual([]);
    expect(tok.encodeContextContinuation('The sky is', ' blue').context[0]).not.toBe(128000);
    expect(tok.bosNotice).toMatch(/^notice: .*names bos_token "<\|begin_of_text\|>", but encoding adds none/);
    expect(tok.bosNotice).not.toContain('\n');
    expect(llama31Tok().bosNotice).toBeNull();
    const tiny = buildTinyTokenizer();
    expect(Tokenizer.fromJson(tiny.tokenizerJson, tiny.tokenizerConfig).bosNotice).toBeNull();
    // A config that asks for no BOS on purpose gets no notice.
    expect(
      Tokenizer.fromJson(tiny.tokenizerJson, { ...tiny.tokenizerConfig, add_bos_token: false }).bosNotice,
    ).toBeNull();
  });
});

describe('a continuation merged into the context (item 4)', () => {
  const tiny = buildTinyTokenizer();
  const tok = Tokenizer.fromJson(tiny.tokenizerJson, tiny.tokenizerConfig);

  it('"The sky is th" + "e": says it merged and where to move the boundary', () => {
    let err: unknown;
    try {
      tok.encodeContextContinuation('The sky is th', 'e');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ContinuationMergedError);
    const e = err as ContinuationMergedError;
    expect(e.message).toMatch(/merges into the context's last token/);
    expect(e.message).toMatch(/context "The sky is", continuation " the"/);
    expect(e.message).not.toMatch(/continuation has no tokens/);
    expect(e.message).toMatch(/"The sky is th" \+ "e" encode as " the"/);
    expect(e.suggestion).toEqual({ context: 'The sky is', continuation: ' the' });
    // The suggested split is exact.
    const ok = tok.encodeContextContinuation(e.suggestion!.context, e.suggestion!.continuation);
    expect(tok.decode(ok.continuation)).toBe(' the');
  });

  it('a partial merge (the continuation keeps tokens, but not its own) is refused too: Llama 3 digits and LLaMA-2', async () => {
    const l3 = llama31Tok();
    // "20" + "24" → "202" "4": lm-eval's slice would score "4" after "202", which is not the continuation.
    expect(() => l3.encodeContextContinuation('The year 20', '24')).toThrow(
      /merges into the context's last token.*context "The year", continuation " 2024"/,
    );
    const l2 = tokenizerOf(await llama2Files());
    expect(() => l2.encodeContextContinuation('The sky is th', 'e')).toThrow(ContinuationMergedError);
    expect(() => l2.encodeContextContinuation('The sky is', '')).toThrow(/continuation is empty/);
  });
});

describe('decoding defaults of current transformers (item 3)', () => {
  const tiny = buildTinyTokenizer();
  const unset = { ...tiny.tokenizerConfig };
  delete unset.clean_up_tokenization_spaces;

  it('clean_up_tokenization_spaces unset means false; set true cleans up as transformers does', () => {
    const tok = Tokenizer.fromJson(tiny.tokenizerJson, unset);
    const ids = tok.encode("Hi , it 's.", { addSpecialTokens: false });
    expect(tok.cleanUpTokenizationSpaces).toBe(false);
    expect(tok.decode(ids)).toBe("Hi , it 's.");
    const clean = Tokenizer.fromJson(tiny.tokenizerJson, { ...unset, clean_up_tokenization_spaces: true });
    expect(clean.decode(ids)).toBe("Hi, it's.");
    expect(tok.decode(ids, { cleanUpTokenizationSpaces: true })).toBe("Hi, it's.");
  });

  it('the real files: Llama 3.1 sets it true, the LLaMA-2 config false', async () => {
    const l3 = llama31Tok();
    expect(l3.decode(l3.encode('Hi , it is.', { addSpecialTokens: false }))).toBe('Hi, it is.');
    const l2 = tokenizerOf(await llama2Files());
    expect(l2.decode(l2.encode('Hi , it is.', { addSpecialTokens: false }))).toBe('Hi , it is.');
    // Special tokens are kept unless asked (transformers' skip_special_tokens=False).
    expect(l2.decode(l2.encode('Hi'))).toBe('<s> Hi');
    expect(l2.decode(l2.encode('Hi'), { skipSpecialTokens: true })).toBe('Hi');
  });
});
