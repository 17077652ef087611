// Stop strings and generated text on scripted models (each token determines the next, so the generated sequence is
// exact): stop strings that name special tokens (issue 10, item 2), stop strings across tokens that add no text,
// " ," without clean-up (item 3), and generated text as what prompt + generation decodes to after the prompt
// (item 5), on the real Llama 3 and LLaMA-2 tokenizers and the generated one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateText } from '../../lib/model/generation.ts';
import { continuationText, IncrementalDecoder } from '../../lib/model/stop-strings.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { buildTinyTokenizer } from '../../lib/model/tiny-tokenizer.ts';
import {
  llama2Files,
  llama3Files,
  tokenizerOf,
  writeScriptedModel,
  type TokenizerFiles,
} from '../helpers/real-tokenizers.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-stop-strings-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Loads a scripted model, runs `fn`, closes it. */
async function withScripted<T>(
  name: string,
  files: TokenizerFiles,
  script: number[],
  fn: (m: LlamaModel) => Promise<T>,
): Promise<T> {
  const dir = join(root, name);
  await writeScriptedModel(dir, files, script);
  const model = await LlamaModel.load(dir);
  try {
    return await fn(model);
  } finally {
    await model.close();
  }
}

describe('Llama 3 (first release: <|eot_id|> is not an EOS id): "Say" → O K <|eot_id|> … more words.', () => {
  const files = llama3Files('3');
  const tok = tokenizerOf(files);
  const id = (t: string) => tok.tokenToId(t)!;
  const eot = id('<|eot_id|>');
  const reserved = Array.from({ length: 16 }, (_, i) => id(`<|reserved_special_token_${i + 10}|>`));
  // "Say" → "O" " K" <|eot_id|> 16 reserved specials " more" " words" "."
  const prompt = tok.encodePrompt('Say');
  const gen = [id('O'), id('ĠK'), eot, ...reserved, id('Ġmore'), id('Ġwords'), id('.')];
  const script = [prompt.at(-1)!, ...gen];
  let model: LlamaModel;
  beforeAll(async () => {
    await writeScriptedModel(join(root, 'l3'), files, script);
    model = await LlamaModel.load(join(root, 'l3'));
  });
  afterAll(() => model.close());
  const run = (stop: string[], max = 30) =>
    generateText(model, 'Say', { maxNewTokens: max, stopStrings: stop });

  it('without stop strings it runs to the length limit through the special tokens', async () => {
    const r = await run([], gen.length);
    expect(r.stopReason).toBe('length');
    expect(r.tokens).toEqual(gen);
    expect(r.text).toBe('O K more words.');
  });

  it('--stop "<|eot_id|>" stops at that token', async () => {
    const r = await run(['<|eot_id|>']);
    expect(r).toMatchObject({ stopReason: 'stop', stopString: '<|eot_id|>', text: 'O K' });
    expect(r.tokens).toEqual([id('O'), id('ĠK'), eot]);
  });

  it('a stop string with text around a special token: "K<|eot_id|>", "<|eot_id|><|reserved_special_token_10|>"', async () => {
    const a = await run(['K<|eot_id|>']);
    expect(a).toMatchObject({ stopReason: 'stop', text: 'O ' });
    expect(a.tokens).toEqual([id('O'), id('ĠK'), eot]);
    const b = await run(['<|eot_id|><|reserved_special_token_10|>']);
    expect(b).toMatchObject({ stopReason: 'stop', text: 'O K' });
    expect(b.tokens).toEqual([id('O'), id('ĠK'), eot, reserved[0]]);
  });

  it('a plain stop string across 17 tokens that add no text ("K more") fires at " more"', async () => {
    const r = await run(['K more']);
    expect(r).toMatchObject({ stopReason: 'stop', stopString: 'K more', text: 'O ' });
    expect(r.tokens).toEqual(gen.slice(0, gen.indexOf(id('Ġmore')) + 1));
  });
});

describe('generated text is what prompt + generation decodes to after the prompt', () => {
  it('LLaMA-2: "▁The ▁answer" after "[/INST]" is " The answer", as transformers\' pipeline returns it', async () => {
    const files = await llama2Files();
    const tok = tokenizerOf(files);
    const id = (t: string) => tok.tokenToId(t)!;
    const prompt = tok.encodePrompt('[INST] Hi [/INST]');
    const gen = [id('▁The'), id('▁answer')];
    const r = await withScripted('l2-text', files, [prompt.at(-1)!, ...gen, 2], (m) =>
      generateText(m, '[INST] Hi [/INST]', { maxNewTokens: 10 }),
    );
    expect(r.stopReason).toBe('eos');
    expect(r.tokens).toEqual(gen);
    expect(r.text).toBe(' The answer');
    // Decoding the new tokens alone drops the leading space: that is not what the prompt continues with.
    expect(tok.decode(gen, { skipSpecialTokens: true })).toBe('The answer');
  });

  it('clean_up_tokenization_spaces unset: "Hi , it\'s." is generated as is, and --stop " ," fires', async () => {
    const tiny = buildTinyTokenizer();
    delete tiny.tokenizerConfig.clean_up_tokenization_spaces;
    const files = { tokenizerJson: tiny.tokenizerJson, tokenizerConfig: tiny.tokenizerConfig };
    const tok = tokenizerOf(files);
    const gen = tok.encode("Hi , it's.", { addSpecialTokens: false });
    const prompt = tok.encodePrompt('Q:');
    await withScripted('tiny-cleanup', files, [prompt.at(-1)!, ...gen, tiny.eosId], async (m) => {
      const all = await generateText(m, 'Q:', { maxNewTokens: 20 });
      expect(all).toMatchObject({ stopReason: 'eos', text: "Hi , it's." });
      const cut = await generateText(m, 'Q:', { maxNewTokens: 20, stopStrings: [' ,'] });
      expect(cut).toMatchObject({ stopReason: 'stop', stopString: ' ,', text: 'Hi' });
    });
  });
});

describe('incremental decoding', () => {
  it('adds up to the whole decode after every token: byte-fallback characters, specials, leading spaces (LLaMA-2)', async () => {
    const tok = tokenizerOf(await llama2Files());
    const prompt = tok.encodePrompt('[INST] Say it [/INST]');
    // 🎉 and 𝄞 are not in the LLaMA-2 vocabulary: 4 byte tokens each, which decode to nothing until the last.
    const tokens = tok.encode(' Grüße 🎉 aus 日本</s> 𝄞 done.', { addSpecialTokens: false });
    expect(tokens.filter((id) => /^<0x[0-9A-F]{2}>$/.test(tok.idToToken(id)!)).length).toBeGreaterThanOrEqual(
      8,
    );
    const visible = new IncrementalDecoder((ids) => tok.decode(ids, { skipSpecialTokens: true }), prompt);
    for (let k = 1; k <= tokens.length; k++) {
      visible.push(tokens[k - 1]!);
      const whole = continuationText(tok, prompt, tokens.slice(0, k));
      // Equal except for a character whose last byte has not come yet.
      expect(whole.startsWith(visible.text)).toBe(true);
      expect(whole.slice(visible.text.length).replace(/\uFFFD/g, '')).toBe('');
    }
    // The normalizer prepends ▁ to the text and to the piece after </s>: two spaces each.
    expect(visible.text).toBe('  Grüße 🎉 aus 日本  𝄞 done.');
    expect(visible.text).toBe(continuationText(tok, prompt, tokens));
  });
});
