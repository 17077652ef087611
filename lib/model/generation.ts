/**
 * Text generation: greedy or sampled decoding (sampling.ts) with a key/value cache.
 *
 * With the cache (the default), the prompt runs once (prefill) and each new token runs alone against the cached
 * keys/values of everything before it; without it (`useCache: false`, for checks and benchmarks) every step
 * re-runs the whole sequence. Both compute the same logits up to float rounding, so greedy decoding gives the
 * same tokens.
 *
 * Generation stops at the first of: an end-of-sequence id (the checkpoint's: config.json, generation_config.json
 * and the tokenizer's EOS), a stop string appearing in the decoded text, or `maxNewTokens`. The EOS token is
 * not part of the result. With a stop string, `text` ends just before it, and `tokens` end with the token that
 * completed it (as lm-evaluation-harness `until` truncates the text). A stop string naming a special token stops
 * at that token. `text` is what decoding prompt + generation adds after the prompt (stop-strings.ts).
 *
 * One sequence at a time: prompts in a batch would sit at different positions, and the graph's RoPE tables are
 * per position, shared across the batch.
 */
import { UserError } from '../errors.ts';
import type { ChatMessage } from './chat-template.ts';
import type { LlamaModel } from './llama-model.ts';
import { chooseToken, validateSampling, type SamplingOptions } from './sampling.ts';
import { continuationText, StopStringMatcher } from './stop-strings.ts';
import { mulberry32 } from '../engine/random.ts';

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 64). */
  maxNewTokens?: number;
  /** Seed of the sampling generator (default 0); the same seed gives the same sample. */
  seed?: number;
  /** Stop when the decoded continuation contains one of these. */
  stopStrings?: readonly string[];
  /** End-of-sequence ids (default: the checkpoint's). */
  eosIds?: readonly number[];
  /** Decode with the key/value cache (default true). */
  useCache?: boolean;
}

export type StopReason = 'eos' | 'stop' | 'length';

export interface GenerateResult {
  /** Generated token ids (the EOS that ended it excluded). */
  tokens: number[];
  /**
   * What decoding prompt + tokens adds after the decoded prompt (special tokens skipped; cut before a stop
   * string). Empty without a tokenizer.
   */
  text: string;
  stopReason: StopReason;
  /** The stop string that ended generation, when stopReason is 'stop'. */
  stopString?: string;
  promptTokens: number;
}

function positiveInt(value: number, what: string, min: number): number {
  if (!Number.isInteger(value) || value < min)
    throw new UserError(`${what} must be an integer >= ${min}, got ${value}`);
  return value;
}

/** Generates a continuation of `promptIds`; see the module comment. */
export async function generateTokens(
  model: LlamaModel,
  promptIds: readonly number[],
  opts: GenerateOptions = {},
): Promise<GenerateResult> {
  validateSampling(opts);
  const maxNew = positiveInt(opts.maxNewTokens ?? 64, 'max new tokens', 0);
  if (promptIds.length === 0) throw new UserError('the prompt is empty: generation needs at least one token');
  const limit = model.config.maxPositionEmbeddings;
  if (promptIds.length + maxNew > limit) {
    throw new UserError(
      `the prompt (${promptIds.length} tokens) plus ${maxNew} new tokens exceeds the model's ` +
        `max_position_embeddings (${limit}); shorten the prompt or ask for fewer tokens`,
    );
  }
  const eos = new Set(opts.eosIds ?? model.eosIds());
  const stops = (opts.stopStrings ?? []).filter((s) => s.length > 0);
  const tokenizer = stops.length > 0 || model.checkpoint?.tokenizerJson ? model.tokenizer() : null;
  const decode = (ids: readonly number[]) => (tokenizer ? continuationText(tokenizer, promptIds, ids) : '');
  const stopMatcher =
    tokenizer && stops.length > 0 ? new StopStringMatcher(tokenizer, stops, promptIds) : null;
  // Checkpoints often pad the embedding past the tokenizer (vocab_size a multiple of 64 or 128): those rows are
  // no token, cannot be decoded, and are never chosen. Choosing among the first `choosable` logits is masking
  // the rest to −Infinity, without a copy.
  const choosable = tokenizer?.vocabSize ?? Infinity;
  const choosableLogits = (logits: Float32Array) =>
    logits.length > choosable ? logits.subarray(0, choosable) : logits;
  const random = mulberry32(positiveInt(opts.seed ?? 0, 'seed', 0));
  const useCache = opts.useCache ?? true;

  const tokens: number[] = [];
  const result = (stopReason: StopReason, text = decode(tokens), stopString?: string): GenerateResult => ({
    tokens,
    text,
    stopReason,
    ...(stopString === undefined ? {} : { stopString }),
    promptTokens: promptIds.length,
  });
  if (maxNew === 0) return result('length');

  // The last generated token is never fed back, so the cache holds at most prompt + maxNew − 1 positions.
  const cache = useCache ? model.newCache(promptIds.length + maxNew - 1) : null;
  let logits = cache ? await model.prefill(promptIds, cache) : await model.lastLogits(promptIds);
  for (;;) {
    const next = chooseToken(choosableLogits(logits), opts, random);
    if (eos.has(next)) return result('eos');
    tokens.push(next);
    const hit = stopMatcher?.check(tokens);
    if (hit) return result('stop', hit.text, hit.stop);
    if (tokens.length >= maxNew) return result('length');
    logits = cache ? await model.decodeStep(next, cache) : await model.lastLogits([...promptIds, ...tokens]);
  }
}

export interface GenerateTextOptions extends GenerateOptions {
  /** Render the prompt as a user message with the checkpoint's chat template (and the generation prompt). */
  chat?: boolean;
  /** A system message before the user's, with `chat`. */
  system?: string;
}

/**
 * Tokenizes `prompt` (`Tokenizer.encodePrompt`: with BOS, never EOS; or through the chat template with the
 * generation prompt) and generates a continuation.
 */
export async function generateText(
  model: LlamaModel,
  prompt: string,
  opts: GenerateTextOptions = {},
): Promise<GenerateResult> {
  const tok = model.tokenizer();
  let ids: number[];
  if (opts.chat) {
    const messages: ChatMessage[] = [];
    if (opts.system !== undefined) messages.push({ role: 'system', content: opts.system });
    messages.push({ role: 'user', content: prompt });
    ids = tok.encodeChat(messages, { addGenerationPrompt: true });
  } else {
    ids = tok.encodePrompt(prompt);
  }
  return generateTokens(model, ids, opts);
}
