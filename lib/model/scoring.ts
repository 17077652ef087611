/**
 * Log-likelihood scoring of continuations given contexts, as lm-evaluation-harness `loglikelihood` does:
 *
 * - Text pairs are tokenized with `Tokenizer.encodeContextContinuation` (see its contract: the context with the
 *   checkpoint's BOS handling and never an EOS, its trailing whitespace moved to the continuation, the
 *   continuation's tokens being exactly what its text adds to the joint encoding, no added special token).
 * - The model reads (context + continuation) minus its last token, left-truncated to `maxLength` tokens; the
 *   result is the sum over continuation tokens of log p(token | everything before it), the token count, and
 *   whether every continuation token is the model's greedy (argmax) choice.
 *
 * Requests run in batches of similar length (longest first, as lm-eval orders them), right-padded; padding
 * never changes a result (causal attention: real tokens never attend to the padding after them).
 */
import { UserError } from '../errors.ts';
import type { LlamaModel } from './llama-model.ts';

export interface TokenScoreRequest {
  context: readonly number[];
  continuation: readonly number[];
}

export interface ScoreResult {
  /** Σ log p(continuation token | preceding tokens), natural log. */
  loglik: number;
  /** Number of continuation tokens scored. */
  tokens: number;
  /** True when each continuation token is the argmax of the model's distribution at its position. */
  isGreedy: boolean;
}

export interface ScoreOptions {
  /** Sequences per run (default 8). */
  batchSize?: number;
  /** Longest input in tokens; longer ones lose tokens at the start (default: max_position_embeddings). */
  maxLength?: number;
}

/** Scores token-level requests; results are in request order. */
export async function scoreTokens(
  model: LlamaModel,
  requests: readonly TokenScoreRequest[],
  opts: ScoreOptions = {},
): Promise<ScoreResult[]> {
  const batchSize = opts.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new UserError(`batch size must be a positive integer, got ${batchSize}`);
  }
  const maxLength = opts.maxLength ?? model.config.maxPositionEmbeddings;
  const prepared = requests.map((r, index) => {
    if (r.continuation.length === 0) {
      throw new UserError(`request ${index}: the continuation has no tokens; there is nothing to score`);
    }
    if (r.context.length === 0) {
      throw new UserError(`request ${index}: the context has no tokens; start it with BOS (as lm-eval does)`);
    }
    if (r.continuation.length > maxLength) {
      throw new UserError(
        `request ${index}: the continuation has ${r.continuation.length} tokens, more than the ${maxLength} the model reads at once`,
      );
    }
    // lm-eval: (context + continuation)[-(maxLength + 1):][:-1]
    const whole = [...r.context, ...r.continuation].slice(-(maxLength + 1));
    return { index, input: whole.slice(0, -1), targets: whole.slice(-r.continuation.length) };
  });
  const order = [...prepared].sort((a, b) => b.input.length - a.input.length || a.index - b.index);
  const results: ScoreResult[] = new Array(requests.length);
  for (let start = 0; start < order.length; start += batchSize) {
    const chunk = order.slice(start, start + batchSize);
    const batch = model.padBatch(
      chunk.map((c) => c.input),
      // Later, shorter chunks keep the first chunk's batch size: one compiled shape per length, not per size too.
      Math.min(batchSize, order.length),
    );
    const rows: number[] = [];
    const targets: number[] = [];
    chunk.forEach((c, b) => {
      const n = c.input.length;
      const first = n - c.targets.length;
      c.targets.forEach((t, j) => {
        rows.push(b * batch.seq + first + j);
        targets.push(t);
      });
    });
    const { logprob, maxLogprob } = await model.scoreRows(batch, rows, targets);
    let at = 0;
    for (const c of chunk) {
      let loglik = 0;
      let isGreedy = true;
      for (let j = 0; j < c.targets.length; j++, at++) {
        loglik += logprob[at]!;
        // The picked value is the same float as its entry in the log-softmax, so equality is exact.
        if (logprob[at]! < maxLogprob[at]!) isGreedy = false;
      }
      results[c.index] = { loglik, tokens: c.targets.length, isGreedy };
    }
  }
  return results;
}

export interface TextScoreRequest {
  context: string;
  continuation: string;
}

/**
 * Tokenizes text pairs lm-eval style (see the module comment) and scores them. Throws UserError naming the
 * request when a pair cannot be split into context and continuation tokens (see encodeContextContinuation).
 */
export async function scoreContinuations(
  model: LlamaModel,
  requests: readonly TextScoreRequest[],
  opts: ScoreOptions = {},
): Promise<ScoreResult[]> {
  const tok = model.tokenizer();
  const encoded = requests.map((r, i) => {
    try {
      return tok.encodeContextContinuation(r.context, r.continuation);
    } catch (err) {
      if (err instanceof UserError) err.message = `request ${i}: ${err.message}`;
      throw err;
    }
  });
  return scoreTokens(model, encoded, opts);
}
