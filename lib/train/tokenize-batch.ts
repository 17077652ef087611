/**
 * Records → token samples with a loss mask → micro-batches.
 *
 * Instruction records (Alpaca, commonsense) become `prefix + prompt | response + EOS`, where prefix is what the
 * checkpoint's tokenizer puts first (BOS for LLaMA), and prompt and response are encoded SEPARATELY, without
 * special tokens, as QLoRA's collator does: the boundary between prompt and response is then exact, and the prompt
 * tokens are the ones an evaluation that feeds the same prompt will see. Text records are `prefix + text + EOS`.
 * Chat records train on exactly the tokens of the rendered conversation (`encodeChat`: special tokens come from
 * the template only, never doubled); the loss mask is derived from it, never by encoding pieces separately (a
 * SentencePiece normalizer would put a `▁` before each piece). Each assistant turn is located as character spans
 * of the rendered text by rendering the conversation incrementally (`chatTargetSpans`), and the spans become
 * tokens by checking that the text before each span boundary encodes to a prefix of the whole encoding. A record
 * whose turns cannot be located, or whose boundary falls inside a token, is dropped as 'unmaskable' with the
 * reason, for the caller to report with its file and line.
 *
 * Only response tokens (assistant turns, all of a text record) count in the loss unless `trainOnPrompt`.
 * A sample is a token list plus a `targets` mask (1 = this token is predicted); collation turns that into shifted
 * labels (see step-program.ts).
 */
import { UserError, isUserError } from '../errors.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { ChatMessage } from '../model/chat-template.ts';
import { commonPrefixLength } from '../model/stop-strings.ts';
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
  /** The wall clock chat templates' `strftime_now` sees ("YYYY-MM-DDTHH:MM:SS"), pinned for a run. */
  chatClock?: string;
  trainOnPrompt: boolean;
  maxLength: number;
  truncation: 'truncate' | 'drop';
}

export type DropReason = 'too-long' | 'no-targets' | 'unmaskable';

export type TokenizeOutcome =
  | { sample: TokenizedSample }
  | { dropped: DropReason; length: number; source: RecordSource; reason?: string };

/** A chat record whose assistant turns cannot be masked exactly; the message says why. */
class UnmaskableChat extends Error {}

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
    { ids: tok.encodePrompt(prompt), target: false },
    { ids: [...tok.encode(record.output, { addSpecialTokens: false }), eosOf(tok)], target: true },
  ];
}

/**
 * Character spans [start, end) of `full` (the rendered conversation) that are assistant turns the model learns to
 * produce: for assistant message i, from the end of the generation prompt (messages before i rendered with
 * add_generation_prompt, which `full` must continue) through the message's content and the first special token
 * after it (its end-of-turn token: `<|eot_id|>`, `</s>`, `<|im_end|>`), or to where the turn's own rendering and
 * `full` part when no special token follows. Templates that append the assistant header even without a
 * generation prompt (the original Llama-3-8B-Instruct one) thus never put the next header in a turn.
 * Throws (an Error whose message says why; tokenizeRecord reports it as 'unmaskable') when a turn cannot be located.
 */
export function chatTargetSpans(
  messages: readonly ChatMessage[],
  tok: Tokenizer,
  render: (messages: readonly ChatMessage[], addGenerationPrompt: boolean) => string,
): [number, number][] {
  const full = render(messages, false);
  const specials = [...tok.specialTokens.values()];
  const spans: [number, number][] = [];
  for (let i = 0; i < messages.length; i++) {
    if (messages[i]!.role !== 'assistant') continue;
    const prompt = render(messages.slice(0, i), true);
    const through = render(messages.slice(0, i + 1), false);
    const start = prompt.length;
    const end = commonPrefixLength(through, full);
    if (!full.startsWith(prompt) || end < start || (spans.length > 0 && start < spans.at(-1)![1])) {
      throw new UnmaskableChat(
        `the chat template renders the conversation before assistant message ${i} differently from how the ` +
          'whole conversation continues, so that turn cannot be located',
      );
    }
    const content = messages[i]!.content.trim();
    const at = content === '' ? -1 : full.indexOf(content, start);
    const contentEnd = at >= 0 && at + content.length <= end ? at + content.length : start;
    let stop = end;
    for (const s of specials) {
      const k = full.indexOf(s, contentEnd);
      if (k >= 0 && k + s.length <= stop) stop = k + s.length;
    }
    spans.push([start, stop]);
  }
  return spans;
}

/** The rendered conversation's tokens as prompt/target segments (see the module comment). */
function chatSegments(
  messages: readonly ChatMessage[],
  tok: Tokenizer,
  clock: string | undefined,
): Segment[] {
  const render = (m: readonly ChatMessage[], addGenerationPrompt: boolean) =>
    tok.renderChat(m, { addGenerationPrompt, ...(clock === undefined ? {} : { clock }) });
  const full = render(messages, false);
  const ids = tok.encode(full, { addSpecialTokens: false });
  const tokenAt = (char: number, what: string): number => {
    if (char === 0) return 0;
    if (char === full.length) return ids.length;
    const head = tok.encode(full.slice(0, char), { addSpecialTokens: false });
    if (head.length > ids.length || head.some((id, k) => ids[k] !== id)) {
      const around = JSON.stringify(full.slice(Math.max(0, char - 10), char + 10));
      throw new UnmaskableChat(
        `${what} falls inside a token (around ${around}), so its tokens cannot be told from the prompt's`,
      );
    }
    return head.length;
  };
  const segments: Segment[] = [];
  let at = 0;
  chatTargetSpans(messages, tok, render).forEach(([start, end], n) => {
    const a = tokenAt(start, `the start of assistant turn ${n + 1}`);
    const b = tokenAt(end, `the end of assistant turn ${n + 1}`);
    if (a > at) segments.push({ ids: ids.slice(at, a), target: false });
    segments.push({ ids: ids.slice(a, b), target: true });
    at = b;
  });
  if (at < ids.length) segments.push({ ids: ids.slice(at), target: false });
  return segments;
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
          ids: [...tok.encodePrompt(record.text), eosOf(tok)],
          target: true,
        },
      ];
      break;
    case 'chat':
      try {
        const clock = opts.chatClock === undefined ? {} : { clock: opts.chatClock };
        segments = opts.trainOnPrompt
          ? [{ ids: tok.encodeChat(record.messages, clock), target: true }]
          : chatSegments(record.messages, tok, opts.chatClock);
      } catch (err) {
        // Template errors (raise_exception on roles out of order, …) are about this record as well.
        if (!(err instanceof UnmaskableChat) && !isUserError(err)) throw err;
        const reason = `${(err as Error).message}; fix the record, or set trainOnPrompt: true to train on every token`;
        return { dropped: 'unmaskable', length: 0, source: record.source, reason };
      }
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
