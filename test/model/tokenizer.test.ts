// The tokenizer wrapper on the tiny byte-level BPE tokenizer: exact round trips, the BOS policy (once, never
// twice, overridable by tokenizer_config.json), lm-evaluation-harness context/continuation splits, chat templates.
import { describe, expect, it } from 'vitest';
import { buildTinyTokenizer, TINY_CHAT_TEMPLATE } from '../../lib/model/tiny-tokenizer.ts';
import { Tokenizer } from '../../lib/model/tokenizer.ts';
import { UserError } from '../../lib/errors.ts';

const files = buildTinyTokenizer();
const tok = Tokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const BOS = files.bosId;
const EOS = files.eosId;

describe('tiny tokenizer', () => {
  it('is deterministic and stable (golden ids: other tests and fixtures depend on them)', () => {
    expect(JSON.stringify(buildTinyTokenizer().tokenizerJson)).toBe(JSON.stringify(files.tokenizerJson));
    expect(tok.vocabSize).toBe(512);
    expect([BOS, EOS, files.eotId]).toEqual([507, 508, 511]);
    expect(tok.encode('The capital of France is Paris.')).toEqual([
      507, 334, 278, 433, 286, 503, 283, 32, 80, 276, 452, 46,
    ]);
  });

  it.each([
    'How are you doing?',
    "A\n'll !!to?'d''d of, can't.",
    '  leading and trailing spaces  ',
    'tabs\tand\r\nCRLF\n\n\nnewlines',
    'héllo wörld, naïve café',
    '日本語のテキスト',
    'emoji 🎉👩‍👩‍👧 and combining e\u0301',
    '0123456789 3.14159',
    '',
  ])('encodes and decodes %j exactly', (text) => {
    const ids = tok.encode(text, { addSpecialTokens: false });
    expect(ids.every((id) => id >= 0 && id < 507)).toBe(true);
    expect(tok.decode(ids)).toBe(text);
    expect(tok.decode(tok.encode(text), { skipSpecialTokens: true })).toBe(text);
  });

  it('merges make common English shorter than its bytes', () => {
    const text = 'The model is evaluated on tasks such as reading comprehension.';
    expect(tok.encode(text, { addSpecialTokens: false }).length).toBeLessThan(text.length / 2);
  });
});

describe('BOS handling', () => {
  it('adds BOS (from the tokenizer.json template) once, and only when asked', () => {
    expect(tok.prefixIds).toEqual([BOS]);
    expect(tok.suffixIds).toEqual([]);
    expect(tok.encode('hi')[0]).toBe(BOS);
    expect(tok.encode('hi', { addSpecialTokens: false })[0]).not.toBe(BOS);
    expect(tok.encode('hi').slice(1)).toEqual(tok.encode('hi', { addSpecialTokens: false }));
  });

  it('never adds a second BOS to text that already starts with it', () => {
    const ids = tok.encode('<|begin_of_text|>hi');
    expect(ids.filter((id) => id === BOS)).toEqual([BOS]);
    expect(ids).toEqual(tok.encode('hi'));
  });

  it('tokenizer_config.json add_bos_token / add_eos_token override the template', () => {
    const noBos = Tokenizer.fromJson(files.tokenizerJson, { ...files.tokenizerConfig, add_bos_token: false });
    expect(noBos.encode('hi')).toEqual(tok.encode('hi', { addSpecialTokens: false }));
    const withEos = Tokenizer.fromJson(files.tokenizerJson, {
      ...files.tokenizerConfig,
      add_eos_token: true,
    });
    const ids = withEos.encode('hi');
    expect(ids[0]).toBe(BOS);
    expect(ids[ids.length - 1]).toBe(EOS);
  });

  it('a tokenizer without a post-processor gets BOS from add_bos_token (Llama 2 style config)', () => {
    const json = { ...files.tokenizerJson, post_processor: null };
    const plain = Tokenizer.fromJson(json, { ...files.tokenizerConfig });
    expect(plain.encode('hi')[0]).not.toBe(BOS);
    const llama2 = Tokenizer.fromJson(json, { ...files.tokenizerConfig, add_bos_token: true });
    expect(llama2.encode('hi')).toEqual(tok.encode('hi'));
  });

  it('bos/eos tokens may be AddedToken objects; unknown ones are reported', () => {
    const t = Tokenizer.fromJson(files.tokenizerJson, {
      ...files.tokenizerConfig,
      bos_token: { __type: 'AddedToken', content: '<|begin_of_text|>' },
    });
    expect(t.bosId).toBe(BOS);
    expect(() =>
      Tokenizer.fromJson(files.tokenizerJson, { ...files.tokenizerConfig, eos_token: '</s>' }),
    ).toThrow(/eos_token "<\/s>" is not in the vocabulary/);
  });

  it('extra EOS ids (generation_config.json) join eos_token', () => {
    const t = Tokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig, {
      extraEosIds: [EOS, files.eotId],
    });
    expect(t.eosIds).toEqual([EOS, files.eotId]);
    expect(t.eosId).toBe(EOS);
  });
});

describe('context/continuation (lm-evaluation-harness _encode_pair)', () => {
  it('the context carries BOS; the continuation is what the joint encoding adds, without specials', () => {
    const { context, continuation } = tok.encodeContextContinuation('Question: 2+2?\nAnswer:', ' 4');
    expect(context[0]).toBe(BOS);
    expect(continuation).not.toContain(BOS);
    expect([...context, ...continuation]).toEqual(tok.encode('Question: 2+2?\nAnswer: 4'));
    expect(tok.decode(continuation)).toBe(' 4');
  });

  it('moves trailing whitespace of the context to the continuation', () => {
    const a = tok.encodeContextContinuation('Answer: ', 'Paris');
    const b = tok.encodeContextContinuation('Answer:', ' Paris');
    expect(a).toEqual(b);
    expect(tok.decode(a.continuation)).toBe(' Paris');
  });

  it('an empty context is the BOS token alone', () => {
    const r = tok.encodeContextContinuation('', 'Paris');
    expect(r.context).toEqual([BOS]);
    expect(r.continuation).toEqual(tok.encode('Paris', { addSpecialTokens: false }));
  });
});

describe('chat template', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi!' },
  ];

  it('renders the tokenizer_config.json template', () => {
    expect(tok.renderChat(messages, { addGenerationPrompt: true })).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    expect(tok.renderChat(messages)).not.toContain('assistant');
  });

  it('a template that emits BOS gives exactly one BOS, whichever way it is encoded', () => {
    const viaChat = tok.encodeChat(messages, { addGenerationPrompt: true });
    const viaEncode = tok.encode(tok.renderChat(messages, { addGenerationPrompt: true }));
    expect(viaChat).toEqual(viaEncode);
    expect(viaChat.filter((id) => id === BOS).length).toBe(1);
    expect(viaChat[0]).toBe(BOS);
    // Special tokens in the rendered text are single ids.
    expect(viaChat.filter((id) => id === files.eotId).length).toBe(2);
    expect(tok.decode(viaChat)).toBe(tok.renderChat(messages, { addGenerationPrompt: true }));
  });

  it('reports missing templates, template errors and malformed messages', () => {
    const none = Tokenizer.fromJson(files.tokenizerJson, {
      ...files.tokenizerConfig,
      chat_template: undefined,
    });
    expect(() => none.renderChat(messages)).toThrow(/no chat_template/);
    const strict = Tokenizer.fromJson(files.tokenizerJson, {
      ...files.tokenizerConfig,
      chat_template:
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system messages') }}{% endif %}",
    });
    expect(() => strict.renderChat(messages)).toThrow(
      /rendering the chat template failed: .*no system messages/,
    );
    expect(() => tok.renderChat([{ role: 'user' } as never])).toThrow(
      /chat message 0 must have a string "role"/,
    );
    expect(() =>
      Tokenizer.fromJson(files.tokenizerJson, { ...files.tokenizerConfig, chat_template: '{% if %}' }),
    ).toThrow(/chat template does not parse/);
  });

  it('picks the "default" entry of a list of named templates', () => {
    const t = Tokenizer.fromJson(files.tokenizerJson, {
      ...files.tokenizerConfig,
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: TINY_CHAT_TEMPLATE },
      ],
    });
    expect(t.renderChat(messages)).toBe(tok.renderChat(messages));
  });
});

describe('errors', () => {
  it('decode rejects ids outside the vocabulary (a user error: e.g. a model row past the tokenizer)', () => {
    expect(() => tok.decode([5, 512])).toThrow(
      /token id 512 is outside the tokenizer's vocabulary \[0, 512\)/,
    );
    expect(() => tok.decode([786])).toThrow(UserError);
    expect(tok.decode([])).toBe('');
  });

  it('a tokenizer.json without a model section', () => {
    expect(() => Tokenizer.fromJson({ version: '1.0' }, {}, { source: 'x/tokenizer.json' })).toThrow(
      /x\/tokenizer\.json: no "model" section/,
    );
  });
});
