// Chat training samples on real tokenizers (issue 10, items 5 and 7): the tokens are exactly the tokenization of the
// rendered conversation and the targets are each assistant turn's content and end-of-turn token only, for the
// SentencePiece LLaMA-2 and byte-level Llama 3 / 3.1 families; records that cannot be masked are named with their
// file and line.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChatMessage } from '../../lib/model/chat-template.ts';
import type { Tokenizer } from '../../lib/model/tokenizer.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';
import { tokenizeRecord, type TokenizeOptions } from '../../lib/train/tokenize-batch.ts';
import { prepareTrainingData } from '../../lib/train/training-data.ts';
import { llama2Files, llama3Files, tokenizerOf } from '../helpers/real-tokenizers.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-chat-masking-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const OPTS: TokenizeOptions = {
  template: 'auto',
  trainOnPrompt: false,
  maxLength: 4096,
  truncation: 'truncate',
};
const source = { file: 'data.jsonl', line: 1 };

function sample(tok: Tokenizer, messages: ChatMessage[]) {
  const t = tokenizeRecord({ format: 'chat', messages, source }, tok, OPTS);
  if (!('sample' in t)) throw new Error(`dropped: ${JSON.stringify(t)}`);
  const ids = [...t.sample.ids];
  const targets = ids.filter((_, i) => t.sample.targets[i] === 1);
  return { ids, targets };
}

const single: ChatMessage[] = [
  { role: 'user', content: 'What is the capital of France?' },
  { role: 'assistant', content: 'The capital is Paris.' },
];
const multi: ChatMessage[] = [
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello there.' },
  { role: 'user', content: 'Bye' },
  { role: 'assistant', content: 'Goodbye!' },
];

describe('LLaMA-2 (SentencePiece)', async () => {
  const tok = tokenizerOf(await llama2Files());
  const id = (t: string) => tok.tokenToId(t)!;

  it('the sample is the rendered conversation\'s tokens; "[/INST] ▁The", not "[/INST] ▁ ▁The"', () => {
    const { ids, targets } = sample(tok, single);
    expect(ids).toEqual(tok.encodeChat(single));
    const rendered = tok.renderChat(single);
    expect(rendered).toBe('<s>[INST] What is the capital of France? [/INST] The capital is Paris. </s>');
    // The assistant turn " The capital is Paris. </s>": its tokens inside the whole encoding.
    expect(targets).toEqual([id('▁The'), id('▁capital'), id('▁is'), id('▁Paris'), id('.'), id('▁'), 2]);
    const at = ids.indexOf(id('▁The'));
    expect(ids.slice(at - 2, at)).toEqual([id('INST'), id(']')]);
  });

  it('multi-turn: both assistant turns and nothing else are targets', () => {
    const { ids, targets } = sample(tok, multi);
    expect(ids).toEqual(tok.encodeChat(multi));
    expect(tok.decode(targets)).toBe('Hello there. </s> Goodbye! </s>');
    expect(targets.filter((t) => t === 2)).toHaveLength(2);
    expect(targets).not.toContain(1);
  });
});

describe('Llama 3.1 (byte-level BPE)', () => {
  const tok = tokenizerOf(llama3Files('3.1'));

  it('targets are the content and <|eot_id|>', () => {
    const { ids, targets } = sample(tok, multi);
    expect(ids).toEqual(tok.encodeChat(multi));
    expect(tok.decode(targets)).toBe('Hello there.<|eot_id|>Goodbye!<|eot_id|>');
  });
});

describe('the original Llama-3-8B-Instruct template (appends the assistant header without a generation prompt)', () => {
  const tok = tokenizerOf(llama3Files('3'));
  const header = [128006, tok.tokenToId('assistant')!, 128007, tok.tokenToId('ĊĊ')!];

  it('single turn: the 4 header tokens after <|eot_id|> are not targets', () => {
    const { ids, targets } = sample(tok, single);
    expect(ids).toEqual(tok.encodeChat(single));
    expect(ids.slice(-4)).toEqual(header);
    expect(tok.decode(targets)).toBe('The capital is Paris.<|eot_id|>');
  });

  it('multi-turn records train on each turn (they used to fail without naming the record)', () => {
    const { ids, targets } = sample(tok, multi);
    expect(ids).toEqual(tok.encodeChat(multi));
    expect(tok.decode(targets)).toBe('Hello there.<|eot_id|>Goodbye!<|eot_id|>');
  });

  it('a template whose turn ends in <|eot_id|> and a newline: the newline is not a target (ChatML layout)', () => {
    const files = llama3Files('3.1');
    files.tokenizerConfig.chat_template =
      "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '\\n' + m['content'] + '<|eot_id|>\\n' }}{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant\\n' }}{% endif %}";
    const chatml = tokenizerOf(files);
    const { ids, targets } = sample(chatml, multi);
    expect(ids).toEqual(chatml.encodeChat(multi));
    expect(chatml.decode(targets)).toBe('Hello there.<|eot_id|>Goodbye!<|eot_id|>');
  });
});

describe('records that cannot be masked are named with file and line', () => {
  const write = (name: string, records: unknown[]) => {
    const path = join(root, name);
    writeFileSync(path, records.map((r) => JSON.stringify(r)).join('\n'));
    return path;
  };
  const good = Array.from({ length: 9 }, (_, i) => ({
    messages: [
      { role: 'user', content: `Question ${i}?` },
      { role: 'assistant', content: `Answer ${i}.` },
    ],
  }));
  // LLaMA-2's template raises on roles out of order; a template without trim puts "\n\n\n" in one Llama 3 token.
  const outOfOrder = {
    messages: [
      { role: 'assistant', content: 'I speak first.' },
      { role: 'user', content: 'Hi' },
    ],
  };

  it('LLaMA-2: a record its template refuses fails the run under maxBadRecordFraction 0, naming llama2.jsonl:4', async () => {
    const tok = tokenizerOf(await llama2Files());
    const path = write('llama2.jsonl', [...good.slice(0, 3), outOfOrder, ...good.slice(3)]);
    const config = parseTrainConfig({ maxLength: 256, evalFraction: 0, maxBadRecordFraction: 0 });
    await expect(
      prepareTrainingData({ train: path, tokenizer: tok, config, displayRoot: root, warn: () => {} }),
    ).rejects.toThrow(
      /1 of 10 records cannot be masked[\s\S]*llama2\.jsonl:4: .*Conversation roles must alternate/,
    );
  });

  it('Llama 3.1 with an untrimmed template: a turn starting with a newline is skipped with a warning naming it', async () => {
    const files = llama3Files('3.1');
    files.tokenizerConfig.chat_template =
      "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
    const tok = tokenizerOf(files);
    const newline = {
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: '\nHello' },
      ],
    };
    const path = write('llama3.jsonl', [...good.slice(0, 6), newline, ...good.slice(6)]);
    const config = parseTrainConfig({ maxLength: 256, evalFraction: 0, maxBadRecordFraction: 0.2 });
    const warnings: string[] = [];
    const data = await prepareTrainingData({
      train: path,
      tokenizer: tok,
      config,
      displayRoot: root,
      warn: (m) => warnings.push(m),
    });
    expect(data.report.trainSamples).toBe(9);
    expect(data.report.badRecords).toBe(1);
    expect(data.report.badExamples[0]).toMatchObject({ file: 'llama3.jsonl', line: 7 });
    expect(warnings.join('\n')).toMatch(
      /llama3\.jsonl:7: the start of assistant turn 1 falls inside a token/,
    );
  });
});
