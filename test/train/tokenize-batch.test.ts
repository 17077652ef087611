import { describe, expect, it } from 'vitest';
import { buildTinyTokenizer } from '../../lib/model/tiny-tokenizer.ts';
import { Tokenizer } from '../../lib/model/tokenizer.ts';
import type { DatasetRecord } from '../../lib/train/datasets.ts';
import { renderPrompt } from '../../lib/train/prompt-templates.ts';
import {
  collate,
  collatePacked,
  epochPlan,
  evalPlan,
  lengthGroupedOrder,
  sampleTargetCount,
  tokenizeRecord,
  type TokenizeOptions,
  type TokenizedSample,
} from '../../lib/train/tokenize-batch.ts';
import { countTargets } from '../../lib/train/step-program.ts';

const files = buildTinyTokenizer();
const tok = Tokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const BOS = files.bosId;
const EOS = files.eosId;
const src = { file: 'mem', line: 1 };
const opts: TokenizeOptions = {
  template: 'auto',
  trainOnPrompt: false,
  maxLength: 512,
  truncation: 'truncate',
};

function tokenize(record: DatasetRecord, o: Partial<TokenizeOptions> = {}): TokenizedSample {
  const r = tokenizeRecord(record, tok, { ...opts, ...o });
  if (!('sample' in r)) throw new Error(`dropped: ${r.dropped}`);
  return r.sample;
}

/** Decodes the tokens of a sample where targets == flag, in runs joined by '|'. */
function pieces(s: TokenizedSample, flag: number): string {
  const runs: number[][] = [];
  let cur: number[] | null = null;
  s.ids.forEach((id, i) => {
    if (s.targets[i] === flag) {
      if (!cur) runs.push((cur = []));
      cur.push(id);
    } else cur = null;
  });
  return runs.map((r) => tok.decode(r)).join('|');
}

const alpaca: DatasetRecord = {
  format: 'alpaca',
  instruction: 'What color is the sky?',
  input: '',
  output: 'The sky is blue.',
  source: src,
};

describe('tokenizing records', () => {
  it('instruction records: one BOS, the prompt unmasked, response + EOS as the only targets', () => {
    const s = tokenize(alpaca);
    expect(s.ids[0]).toBe(BOS);
    expect([...s.ids].filter((id) => id === BOS)).toHaveLength(1);
    expect(s.ids.at(-1)).toBe(EOS);
    expect(pieces(s, 0)).toBe(`<|begin_of_text|>${renderPrompt('alpaca', alpaca.instruction, '')}`);
    expect(pieces(s, 1)).toBe('The sky is blue.<|end_of_text|>');
    expect(sampleTargetCount(s)).toBe(tok.encode('The sky is blue.', { addSpecialTokens: false }).length + 1);
  });

  it('trainOnPrompt counts every token but the first; auto picks llm-adapters for commonsense records', () => {
    const all = tokenize(alpaca, { trainOnPrompt: true });
    expect(all.targets[0]).toBe(0);
    expect(sampleTargetCount(all)).toBe(all.ids.length - 1);
    const cs = tokenize({
      format: 'commonsense',
      instruction: 'Q?',
      input: '',
      output: 'the correct answer is true',
      answer: 'true',
      source: src,
    });
    expect(pieces(cs, 0)).toBe(`<|begin_of_text|>${renderPrompt('llm-adapters', 'Q?', '')}`);
    expect(pieces(cs, 1)).toBe('the correct answer is true<|end_of_text|>');
    const forced = tokenize({ ...alpaca }, { template: 'alpaca-qlora' });
    expect(pieces(forced, 0)).toMatch(/### Response: $/);
  });

  it('text records are trained on entirely, with BOS and EOS', () => {
    const s = tokenize({ format: 'text', text: 'A plain sentence.', source: src });
    expect(tok.decode([...s.ids])).toBe('<|begin_of_text|>A plain sentence.<|end_of_text|>');
    expect(sampleTargetCount(s)).toBe(s.ids.length - 1);
  });

  it('chat records: the template renders once (one BOS); only assistant turns and their end tokens count', () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Sky?' },
      { role: 'assistant', content: 'Blue.' },
      { role: 'user', content: 'Grass?' },
      { role: 'assistant', content: 'Green.' },
    ];
    const s = tokenize({ format: 'chat', messages, source: src });
    expect([...s.ids]).toEqual(tok.encodeChat(messages));
    expect([...s.ids].filter((id) => id === BOS)).toHaveLength(1);
    expect(pieces(s, 1)).toBe('Blue.<|eot_id|>|Green.<|eot_id|>');
    expect(pieces(s, 0)).toMatch(/^<\|begin_of_text\|><\|start_header_id\|>system<\|end_header_id\|>/);
    expect(pieces(s, 0)).toMatch(/<\|start_header_id\|>assistant<\|end_header_id\|>\n\n$/);
    const all = tokenize({ format: 'chat', messages, source: src }, { trainOnPrompt: true });
    expect(sampleTargetCount(all)).toBe(all.ids.length - 1);
  });

  it('over-long samples are truncated (EOS lost) or dropped; a prompt that fills maxLength is dropped', () => {
    const full = tokenize(alpaca);
    const cut = tokenize(alpaca, { maxLength: full.ids.length - 2 });
    expect(cut.truncated).toBe(true);
    expect(cut.ids.length).toBe(full.ids.length - 2);
    expect([...cut.ids]).toEqual([...full.ids.slice(0, -2)]);
    expect(cut.ids.includes(EOS)).toBe(false);
    expect(
      tokenizeRecord(alpaca, tok, { ...opts, maxLength: full.ids.length - 1, truncation: 'drop' }),
    ).toEqual({
      dropped: 'too-long',
      length: full.ids.length,
      source: src,
    });
    const promptLen = full.targets.indexOf(1);
    expect(tokenizeRecord(alpaca, tok, { ...opts, maxLength: promptLen })).toMatchObject({
      dropped: 'no-targets',
    });
  });
});

const sample = (ids: number[], targets: number[]): TokenizedSample => ({
  ids: Int32Array.from(ids),
  targets: Uint8Array.from(targets),
  source: src,
  truncated: false,
});

describe('collation', () => {
  it('right-pads to a multiple, with shifted labels: labels[t] = ids[t+1] where that token is a target', () => {
    const a = sample([10, 11, 12, 13], [0, 0, 1, 1]);
    const b = sample([20, 21], [0, 1]);
    const batch = collate([a, b], { padId: 99, padToMultipleOf: 4 });
    expect(batch.batchSize).toBe(2);
    expect(batch.seqLen).toBe(4);
    expect([...batch.inputIds].map(Number)).toEqual([10, 11, 12, 13, 20, 21, 99, 99]);
    expect([...batch.labels].map(Number)).toEqual([-100, 12, 13, -100, 21, -100, -100, -100]);
    expect([...batch.attentionMask]).toEqual([1, 1, 1, 1, 1, 1, 0, 0]);
    expect(countTargets(batch.labels)).toBe(sampleTargetCount(a) + sampleTargetCount(b));
    expect(batch.positionIds).toBeUndefined();
    expect(collate([b], { padId: 0, padToMultipleOf: 8 }).seqLen).toBe(8);
  });

  it('rounds up no further than maxSeqLen (a limit that is not a multiple of padToMultipleOf)', () => {
    const five = sample([1, 2, 3, 4, 5], [0, 1, 1, 1, 1]);
    expect(collate([five], { padId: 0, padToMultipleOf: 4, maxSeqLen: 6 }).seqLen).toBe(6);
    expect(collate([five], { padId: 0, padToMultipleOf: 4, maxSeqLen: 5 }).seqLen).toBe(5);
    expect(collate([five], { padId: 0, padToMultipleOf: 4, maxSeqLen: 100 }).seqLen).toBe(8);
    // A row past the limit is not cut: the program refuses it with its own message.
    expect(collate([five], { padId: 0, padToMultipleOf: 4, maxSeqLen: 3 }).seqLen).toBe(5);
    const packed = collatePacked([[five, five]], { padId: 0, padToMultipleOf: 8, maxSeqLen: 12 });
    expect(packed.seqLen).toBe(12);
  });

  it('packed rows restart positions per sample and never predict across a sample boundary', () => {
    const a = sample([10, 11, 12], [0, 1, 1]);
    const b = sample([20, 21, 22], [0, 1, 1]);
    const c = sample([30, 31], [0, 1]);
    const batch = collatePacked([[a, b], [c]], { padId: 0, padToMultipleOf: 1 });
    expect(batch.seqLen).toBe(6);
    expect([...batch.labels].map(Number)).toEqual([
      11, 12, -100, 21, 22, -100, 31, -100, -100, -100, -100, -100,
    ]);
    expect([...batch.positionIds!].map(Number)).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 0, 0, 0, 0]);
    expect([...batch.segmentIds!].map(Number)).toEqual([1, 1, 1, 2, 2, 2, 1, 1, 0, 0, 0, 0]);
  });
});

describe('data order', () => {
  const lengths = Array.from({ length: 103 }, (_, i) => 5 + ((i * 37) % 60));
  const base = { seed: 3, microBatchSize: 4, groupByLength: false, packing: false, maxLength: 64 };

  it('is a seeded permutation per epoch: every sample once, the same for the same (seed, epoch)', () => {
    const e0 = epochPlan(lengths, 0, base);
    expect(e0).toHaveLength(26);
    expect(e0.at(-1)).toHaveLength(3);
    const flat = e0.flat(2).sort((a, b) => a - b);
    expect(flat).toEqual(lengths.map((_, i) => i));
    expect(epochPlan(lengths, 0, base)).toEqual(e0);
    expect(epochPlan(lengths, 1, base)).not.toEqual(e0);
    expect(epochPlan(lengths, 0, { ...base, seed: 4 })).not.toEqual(e0);
  });

  it('length grouping (transformers get_length_grouped_indices): sorted mega-batches, longest sample first', () => {
    const perm = lengths.map((_, i) => i);
    // mult = min(⌊103 / 16⌋, 50) = 6: mega-batches of 24 samples.
    const order = lengthGroupedOrder(lengths, 4, perm);
    expect([...order].sort((a, b) => a - b)).toEqual(perm);
    const longest = Math.max(...lengths);
    expect(lengths[order[0]!]).toBe(longest);
    // Each mega-batch is sorted longest first, except its first element, which the longest-first swap may change.
    for (let m = 0; m < order.length; m += 24) {
      const mega = order.slice(m + 1, m + 24).map((i) => lengths[i]!);
      expect(mega).toEqual([...mega].sort((a, b) => b - a));
    }
    const plans = epochPlan(lengths, 0, { ...base, groupByLength: true });
    expect(lengths[plans[0]![0]![0]!]).toBe(longest);
  });

  it('packing fills rows up to maxLength with consecutive shuffled samples', () => {
    const plans = epochPlan(lengths, 0, { ...base, packing: true });
    const rows = plans.flat();
    for (const row of rows) expect(row.reduce((n, i) => n + lengths[i]!, 0)).toBeLessThanOrEqual(64);
    expect(rows.flat().sort((a, b) => a - b)).toEqual(lengths.map((_, i) => i));
    expect(rows.length).toBeLessThan(lengths.length);
    expect(plans.every((p) => p.length <= 4)).toBe(true);
  });

  it('evaluation goes longest first, deterministically', () => {
    const plans = evalPlan([3, 9, 9, 1, 5], 2);
    expect(plans).toEqual([[[1], [2]], [[4], [0]], [[3]]]);
  });
});
