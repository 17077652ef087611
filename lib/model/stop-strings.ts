/**
 * The text of a generation and its stop strings.
 *
 * The text of a continuation is what decoding prompt + generation adds after the decoded prompt, as transformers'
 * text-generation pipeline computes it (`decode(all)[len(decode(prompt)):]`): decoding the new tokens alone would
 * lose a SentencePiece token's leading space (`▁The` decodes to "The" at the start of a text) and split multi-byte
 * characters continued from the prompt.
 *
 * Stop strings are searched in text that grows one token at a time, decoded incrementally (vLLM's and TGI's
 * `detokenize_incrementally`): each step decodes only the tokens since the last complete character plus one before,
 * so a long generation costs linear, not quadratic, decoding, and the search makes no assumption about how much text
 * a token adds (a skipped special token adds none, a byte token of a multi-byte character none until the character
 * is complete). Every new character is searched.
 *
 * A stop string that contains a special token's text (`<|eot_id|>`, `</s>`) is searched in the text decoded WITH
 * special tokens, so it fires at that token; other stop strings are searched in the text without them, the text a
 * user sees. Either way the result's text ends just before the stop string (in the text without special tokens) and
 * its tokens end with the token that completed it, as lm-evaluation-harness `until` truncates.
 */
import type { Tokenizer } from './tokenizer.ts';

/** Prompt tokens decoded before the first new one: enough for a leading space or a character's first bytes. */
const PROMPT_CONTEXT_TOKENS = 6;

/** The length of the longest common prefix of `a` and `b`, in UTF-16 code units. */
export function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** The text that `tokens` add after `prompt` (see the module comment); special tokens are skipped. */
export function continuationText(
  tok: Tokenizer,
  prompt: readonly number[],
  tokens: readonly number[],
): string {
  if (tokens.length === 0) return '';
  const opts = { skipSpecialTokens: true };
  const before = tok.decode(prompt, opts);
  const all = tok.decode([...prompt, ...tokens], opts);
  // A prompt ending inside a multi-byte character decodes to U+FFFD there; the whole text has the character.
  return all.slice(commonPrefixLength(before, all));
}

/** Text decoded incrementally after a prompt; see the module comment. */
export class IncrementalDecoder {
  /** The text added so far (characters only: an unfinished multi-byte character waits for its last byte). */
  text = '';
  private readonly ids: number[];
  private prefixOffset = 0;
  private readOffset: number;

  constructor(
    private readonly decode: (ids: readonly number[]) => string,
    prompt: readonly number[],
  ) {
    this.ids = prompt.slice(-PROMPT_CONTEXT_TOKENS);
    this.readOffset = this.ids.length;
  }

  /** Appends one token; returns the text it completed ('' when none yet). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const all = this.decode(this.ids.slice(this.prefixOffset));
    if (all.endsWith('\uFFFD')) return ''; // a multi-byte character is not complete yet
    const same = commonPrefixLength(prefix, all);
    if (all.length <= same) return ''; // e.g. a skipped special token
    const delta = all.slice(same);
    this.text += delta;
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return delta;
  }
}

/** A stop string found: the stop, and the continuation's text cut just before it. */
export interface StopHit {
  stop: string;
  text: string;
}

/** The first of `stops` in `text` at or after `from` (the earliest; the first listed on a tie), or null. */
function firstStop(text: string, stops: readonly string[], from = 0): { cut: number; stop: string } | null {
  let found: { cut: number; stop: string } | null = null;
  for (const stop of stops) {
    const at = text.indexOf(stop, from);
    if (at >= 0 && (found === null || at < found.cut)) found = { cut: at, stop };
  }
  return found;
}

/** Watches a growing continuation for stop strings; see the module comment. */
export class StopStringMatcher {
  private readonly plainStops: string[];
  private readonly specialStops: string[];
  private readonly visible: IncrementalDecoder;
  private readonly raw: IncrementalDecoder | null;
  /** For each generated special token (by index): where its text starts in the raw text. */
  private readonly specialStarts = new Map<number, number>();

  constructor(
    private readonly tok: Tokenizer,
    stops: readonly string[],
    private readonly prompt: readonly number[],
  ) {
    const specials = [...tok.specialTokens.values()];
    const named = (s: string) => specials.some((t) => s.includes(t));
    this.plainStops = stops.filter((s) => s.length > 0 && !named(s));
    this.specialStops = stops.filter((s) => s.length > 0 && named(s));
    this.visible = new IncrementalDecoder((ids) => tok.decode(ids, { skipSpecialTokens: true }), prompt);
    this.raw =
      this.specialStops.length > 0
        ? new IncrementalDecoder((ids) => tok.decode(ids, { skipSpecialTokens: false }), prompt)
        : null;
  }

  /** After `tokens` (the whole continuation so far) grew by one token: the stop it completed, or null. */
  check(tokens: readonly number[]): StopHit | null {
    const index = tokens.length - 1;
    const id = tokens[index]!;
    const plain = this.search(this.visible, id, this.plainStops);
    if (plain) {
      // Cut where the whole decode puts the stop string; the incremental text can differ from it only where
      // clean_up_tokenization_spaces rewrites text across a step boundary.
      const whole = continuationText(this.tok, this.prompt, tokens);
      const hit = firstStop(whole, this.plainStops);
      if (hit) return { stop: hit.stop, text: whole.slice(0, hit.cut) };
    }
    if (this.raw) {
      const special = this.tok.specialTokens.get(id);
      const found = this.search(this.raw, id, this.specialStops);
      if (special !== undefined && this.raw.text.endsWith(special)) {
        this.specialStarts.set(index, this.raw.text.length - special.length);
      }
      if (found) return this.specialHit(found, tokens);
    }
    return null;
  }

  /** Pushes `id` and searches the characters it added (and the stop length before them) for `stops`. */
  private search(
    stream: IncrementalDecoder,
    id: number,
    stops: readonly string[],
  ): { cut: number; stop: string } | null {
    if (stops.length === 0) {
      stream.push(id);
      return null;
    }
    const before = stream.text.length;
    const delta = stream.push(id);
    if (delta === '') return null;
    const longest = Math.max(...stops.map((s) => s.length));
    return firstStop(stream.text, stops, Math.max(0, before - longest + 1));
  }

  /**
   * A stop string with a special token matched the raw text at `cut`: the visible text ends before the token
   * holding its first special token, less the stop string's text before that token.
   */
  private specialHit(found: { cut: number; stop: string }, tokens: readonly number[]): StopHit {
    const specials = [...this.tok.specialTokens.values()];
    let firstSpecial = found.stop.length;
    for (const s of specials) {
      const at = found.stop.indexOf(s);
      if (at >= 0 && at < firstSpecial) firstSpecial = at;
    }
    const pre = found.stop.slice(0, firstSpecial);
    const start = found.cut + pre.length;
    let at = tokens.length;
    for (const [index, s] of this.specialStarts) if (s === start && index < at) at = index;
    const text = continuationText(this.tok, this.prompt, tokens.slice(0, at));
    return { stop: found.stop, text: pre !== '' && text.endsWith(pre) ? text.slice(0, -pre.length) : text };
  }
}
