/**
 * Records → token samples with a loss mask → micro-batches.
 *
 * Instruction records (Alpaca, commonsense) become `prefix + prompt | response + EOS`, where prefix is what the
 * checkpoint's tokenizer puts first (BOS for LLaMA), and prompt and response are encoded SEPARATELY, without
 * special tokens, as QLoRA's collator does: the boundary between prompt and response is then exact, and the prompt
 * tokens are the ones an evaluation that feeds the same prompt will see. Text records are `prefix + text + EOS`.
 * Chat records are rendered with the checkpoint's chat template; the assistant turns are found by rendering the
 * conversation incrementally (before each assistant turn with the generation prompt, then through it), and each
 * piece is encoded on its own, so special tokens of the template are kept and never doubled.
 *
 * Only response tokens (assistant turns, all of a text record) count in the loss unless `trainOnPrompt`.
 * A sample is a token list plus a `targets` mask (1 = this token is predicted); collation turns that into shifted
 * labels (see step-program.ts).
 */
import { UserError } from '../errors.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { ChatMessage } from '../model/chat-template.ts';
import type { DatasetRecord, RecordSource } from './datasets.ts';
import { seededPermutation, streamSeed } from './datasets.ts';
import { defaultTemplateFor, renderPrompt, type PromptTemplateName } from './prompt-templates.ts';
import { IGNORE_INDEX, type TokenBatch } from './step-program.ts';

export interface TokenizedSample {
  ids: Int32Array;
  /** 1 where the token is a target of the loss; position 0 never is (nothing precedes it). */
  targets: Uint8Array;
  source: RecordSource;
  truncated: boolean;
}

export interface TokenizeOptions {
  template: PromptTemplateName | 'auto';
  trainOnPrompt: boolean;
  maxLength: number;
  truncation: 'truncate' | 'drop';
}

export type DropReason = 'too-long' | 'no-targets';

export type TokenizeOutcome =
  | { sample: TokenizedSample }
  | { dropped: DropReason; length: number; source: RecordSource };

interface Segment {
  ids: number[];
  target: boolean;
}

function eosOf(tok: Tokenizer): number {
  if (tok.eosId === null) {
    throw new UserError(
      'the tokenizer has no eos_token (tokenizer_config.json), so responses cannot be terminated; add one',
    );
  }
  return tok.eosId;
}

function instructionSegments(
  record: Extract<DatasetRecord, { format: 'alpaca' | 'commonsense' }>,
  tok: Tokenizer,
  template: PromptTemplateName | 'auto',
): Segment[] {
  const name = template === 'auto' ? defaultTemplateFor(record.format) : template;
  const prompt = renderPrompt(name, record.instruction, record.input);
  return [
    { ids: [...tok.prefixIds, ...tok.encode(prompt, { addSpecialTokens: false })], target: false },
    { ids: [...tok.encode(record.output, { addSpecialTokens: false }), eosOf(tok)], target: true },
  ];
}

/** Splits a conversation into prompt and assistant-turn pieces by incremental rendering. */
function chatSegments(messages: readonly ChatMessage[], tok: Tokenizer): Segment[] {
  const full = tok.renderChat(messages);
  const pieces: { text: string; target: boolean }[] = [];
  let cursor = 0;
  for (let i = 0; i < messages.length; i++) {
    if (messages[i]!.role !== 'assistant') continue;
    const before = tok.renderChat(messages.slice(0, i), { addGenerationPrompt: true });
    const through = tok.renderChat(messages.slice(0, i + 1));
    if (!full.startsWith(through) || !through.startsWith(before) || before.length < cursor) {
      throw new UserError(
        'the chat template does not render a conversation as an extension of its beginning, so assistant turns ' +
          'cannot be located for a response-only loss; set trainOnPrompt: true to train on every token',
      );
    }
    if (before.length > cursor) pieces.push({ text: full.slice(cursor, before.length), target: false });
    pieces.push({ text: full.slice(before.length, through.length), target: true });
    cursor = through.length;
  }
  if (cursor < full.length) pieces.push({ text: full.slice(cursor), target: false });
  return pieces.map((p) => ({ ids: tok.encode(p.text, { addSpecialTokens: false }), target: p.target }));
}

/** Tokenizes one record (see the module comment); over-long or target-less samples come back as dropped. */
export function tokenizeRecord(
  record: DatasetRecord,
  tok: Tokenizer,
  opts: TokenizeOptions,
): TokenizeOutcome {
  let segments: Segment[];
  switch (record.format) {
    case 'alpaca':
    case 'commonsense':
      segments = instructionSegments(record, tok, opts.template);
      break;
    case 'text':
      segments = [
        {
          ids: [...tok.prefixIds, ...tok.encode(record.text, { addSpecialTokens: false }), eosOf(tok)],
          target: true,
        },
      ];
      break;
    case 'chat':
      segments = opts.trainOnPrompt
        ? [{ ids: tok.encodeChat(record.messages), target: true }]
        : chatSegments(record.messages, tok);
      break;
  }
  const total = segments.reduce((n, s) => n + s.ids.length, 0);
  if (total > opts.maxLength && opts.truncation === 'drop') {
    return { dropped: 'too-long', length: total, source: record.source };
  }
  const n = Math.min(total, opts.maxLength);
  const ids = new Int32Array(n);
  const targets = new Uint8Array(n);
  let at = 0;
  for (const s of segments) {
    for (const id of s.ids) {
      if (at >= n) break;
      ids[at] = id;
      targets[at] = s.target || opts.trainOnPrompt ? 1 : 0;
      at++;
    }
  }
  targets[0] = 0;
  if (!targets.includes(1)) return { dropped: 'no-targets', length: total, source: record.source };
  return { sample: { ids, targets, source: record.source, truncated: total > n } };
}

/** Number of counted tokens of a sample (what it contributes to a step's token count). */
export function sampleTargetCount(s: TokenizedSample): number {
  let k = 0;
  for (let i = 1; i < s.targets.length; i++) k += s.targets[i]!;
  return k;
}

export interface CollateOptions {
  padId: number;
  /** Round the sequence length up to a multiple of this (fewer distinct shapes, fewer ORT session compiles). */
  padToMultipleOf: number;
  /**
   * The longest sequence the program accepts (the model's max_position_embeddings): rounding up stops there, so
   * a limit that is not a multiple of padToMultipleOf still takes batches of up to that many tokens.
   */
  maxSeqLen?: number;
}

function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}

/**
 * Right-padded batch of whole samples, one per row. Labels are shifted: labels[t] = ids[t + 1] where that token is
 * a target, −100 elsewhere (prompt, the last position, padding).
 */
export function collate(samples: readonly TokenizedSample[], opts: CollateOptions): TokenBatch {
  return collateRows(
    samples.map((s) => [s]),
    opts,
    false,
  );
}

/**
 * Packed batch: each row holds several samples one after the other. Besides the labels (which never cross from
 * one sample into the next), it carries the position of every token within its sample and the segment (1-based
 * sample index within the row) it belongs to, from which the program builds a block-diagonal causal mask.
 */
export function collatePacked(
  rows: readonly (readonly TokenizedSample[])[],
  opts: CollateOptions,
): TokenBatch {
  return collateRows(rows, opts, true);
}

function collateRows(
  rows: readonly (readonly TokenizedSample[])[],
  opts: CollateOptions,
  packed: boolean,
): TokenBatch {
  if (rows.length === 0) throw new Error('collate: no samples');
  const rowLen = rows.map((r) => r.reduce((n, s) => n + s.ids.length, 0));
  const longest = rowLen.reduce((m, n) => Math.max(m, n), 0);
  // Never below the longest row: a row past the limit is the program's to refuse, with its own message.
  const seqLen = Math.max(
    longest,
    Math.min(roundUp(longest, Math.max(1, opts.padToMultipleOf)), opts.maxSeqLen ?? Infinity),
  );
  const batchSize = rows.length;
  const inputIds = new BigInt64Array(batchSize * seqLen).fill(BigInt(opts.padId));
  const labels = new BigInt64Array(batchSize * seqLen).fill(BigInt(IGNORE_INDEX));
  const attentionMask = new Uint8Array(batchSize * seqLen);
  const positionIds = packed ? new BigInt64Array(batchSize * seqLen) : undefined;
  const segmentIds = packed ? new BigInt64Array(batchSize * seqLen) : undefined;
  rows.forEach((row, b) => {
    let at = b * seqLen;
    row.forEach((s, k) => {
      const n = s.ids.length;
      for (let t = 0; t < n; t++) {
        inputIds[at + t] = BigInt(s.ids[t]!);
        attentionMask[at + t] = 1;
        if (t + 1 < n && s.targets[t + 1]) labels[at + t] = BigInt(s.ids[t + 1]!);
        if (positionIds) positionIds[at + t] = BigInt(t);
        if (segmentIds) segmentIds[at + t] = BigInt(k + 1);
      }
      at += n;
    });
  });
  const batch: TokenBatch = { inputIds, labels, attentionMask, batchSize, seqLen };
  if (positionIds && segmentIds) {
    batch.positionIds = positionIds;
    batch.segmentIds = segmentIds;
  }
  return batch;
}

export interface OrderOptions {
  seed: number;
  microBatchSize: number;
  groupByLength: boolean;
  /** Pack samples into rows of at most `maxLength` tokens (rows, not samples, fill a micro-batch). */
  packing: boolean;
  maxLength: number;
}

/** A micro-batch: rows of sample indices (one sample per row unless packed). */
export type MicroBatchPlan = number[][];

/**
 * transformers' get_length_grouped_indices: shuffle, cut into mega-batches of `mult · batch` samples, sort each by
 * length (longest first), and move the overall longest sample to the very front so memory problems show at step 1.
 * mult = min(⌊n / (4 · batch)⌋, 50), at least 1.
 */
export function lengthGroupedOrder(
  lengths: readonly number[],
  batch: number,
  perm: readonly number[],
): number[] {
  const mult = Math.max(1, Math.min(Math.floor(lengths.length / (batch * 4)), 50));
  const mega = mult * batch;
  const groups: number[][] = [];
  for (let i = 0; i < perm.length; i += mega) {
    // Array.prototype.sort is stable, as Python's sorted is: equal lengths keep their shuffled order.
    groups.push(perm.slice(i, i + mega).sort((a, b) => lengths[b]! - lengths[a]!));
  }
  let maxIdx = 0;
  groups.forEach((g, i) => {
    if (lengths[g[0]!]! > lengths[groups[maxIdx]![0]!]!) maxIdx = i;
  });
  if (maxIdx !== 0) {
    const first = groups[0]!;
    const top = groups[maxIdx]!;
    [first[0], top[0]] = [top[0]!, first[0]!];
  }
  return groups.flat();
}

/**
 * The micro-batches of one epoch: a pure function of (lengths, seed, epoch), which is why a data-loader position
 * is just (epoch, micro-batch index) and resuming it is exact.
 */
export function epochPlan(lengths: readonly number[], epoch: number, opts: OrderOptions): MicroBatchPlan[] {
  const perm = seededPermutation(lengths.length, streamSeed(opts.seed, 'train-order', epoch));
  const plans: MicroBatchPlan[] = [];
  if (opts.packing) {
    // Next-fit in shuffled order: each row is filled with consecutive samples while they fit.
    const rows: number[][] = [];
    let row: number[] = [];
    let used = 0;
    for (const i of perm) {
      const n = lengths[i]!;
      if (row.length > 0 && used + n > opts.maxLength) {
        rows.push(row);
        row = [];
        used = 0;
      }
      row.push(i);
      used += n;
    }
    if (row.length) rows.push(row);
    for (let i = 0; i < rows.length; i += opts.microBatchSize)
      plans.push(rows.slice(i, i + opts.microBatchSize));
    return plans;
  }
  const order = opts.groupByLength ? lengthGroupedOrder(lengths, opts.microBatchSize, perm) : perm;
  for (let i = 0; i < order.length; i += opts.microBatchSize) {
    plans.push(order.slice(i, i + opts.microBatchSize).map((s) => [s]));
  }
  return plans;
}

/** Number of micro-batches of an epoch (the same for every epoch unless packed: rows depend on the shuffle). */
export function microBatchesInEpoch(lengths: readonly number[], epoch: number, opts: OrderOptions): number {
  if (!opts.packing) return Math.ceil(lengths.length / opts.microBatchSize);
  return epochPlan(lengths, epoch, opts).length;
}

/** Eval micro-batches: longest first (deterministic, and padding is minimal), unpacked. */
export function evalPlan(lengths: readonly number[], batch: number): MicroBatchPlan[] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const plans: MicroBatchPlan[] = [];
  for (let i = 0; i < order.length; i += batch) plans.push(order.slice(i, i + batch).map((s) => [s]));
  return plans;
}
