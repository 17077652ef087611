/**
 * Choosing the next token from logits, as transformers' `generate` does: greedy (argmax, the first on ties), or
 * sampling with the logits divided by the temperature, then restricted to the `topK` most likely tokens, then to
 * the smallest set whose probability reaches `topP` (nucleus), renormalised and drawn with a seeded generator.
 */
import { UserError } from '../errors.ts';

export interface SamplingOptions {
  /** 0 (the default) decodes greedily; above 0, logits are divided by it before sampling. */
  temperature?: number;
  /** Keep only the k most likely tokens when sampling (default 50, transformers' GenerationConfig; 0: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 or absent: all). */
  topP?: number;
}

const NEGLIGIBLE = 40;

/** transformers' GenerationConfig.top_k: sampling keeps the 50 most likely tokens unless told otherwise. */
const DEFAULT_TOP_K = 50;

/** Index of the largest value (the first one on ties, like torch.argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

export function validateSampling(opts: SamplingOptions): void {
  const t = opts.temperature ?? 0;
  if (!Number.isFinite(t) || t < 0) throw new UserError(`temperature must be a number >= 0, got ${t}`);
  const k = opts.topK ?? 0;
  if (!Number.isInteger(k) || k < 0) throw new UserError(`top-k must be an integer >= 0, got ${k}`);
  const p = opts.topP ?? 1;
  if (!Number.isFinite(p) || p <= 0 || p > 1) throw new UserError(`top-p must be in (0, 1], got ${p}`);
}

/** The next token: greedy when the temperature is 0, else a draw with `random` (uniform on [0, 1)). */
export function chooseToken(logits: ArrayLike<number>, opts: SamplingOptions, random: () => number): number {
  const t = opts.temperature ?? 0;
  if (t === 0) return argmax(logits);
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]!);
  // Tokens more than NEGLIGIBLE below the best (in logit/temperature units) weigh < e^-40 relative to it: they
  // cannot be drawn in practice, so they are dropped before sorting (a 128k vocabulary sorts slowly per token).
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) if ((max - logits[i]!) / t < NEGLIGIBLE) candidates.push(i);
  // Candidates by decreasing logit (stable, so ties keep index order).
  candidates.sort((a, b) => logits[b]! - logits[a]! || a - b);
  const topK = opts.topK ?? DEFAULT_TOP_K;
  const kept = topK > 0 ? candidates.slice(0, topK) : candidates;
  const top = max / t;
  const weights = kept.map((i) => Math.exp(logits[i]! / t - top));
  let total = weights.reduce((a, b) => a + b, 0);
  const p = opts.topP ?? 1;
  let count = kept.length;
  if (p < 1) {
    // Smallest prefix whose mass reaches p (at least one token), as transformers' TopPLogitsWarper keeps it.
    let acc = 0;
    for (let i = 0; i < kept.length; i++) {
      acc += weights[i]! / total;
      if (acc >= p) {
        count = i + 1;
        break;
      }
    }
    total = weights.slice(0, count).reduce((a, b) => a + b, 0);
  }
  let u = random() * total;
  for (let i = 0; i < count; i++) {
    u -= weights[i]!;
    if (u < 0) return kept[i]!;
  }
  return kept[count - 1]!;
}
