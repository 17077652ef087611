/**
 * Metrics as lm-evaluation-harness defines them, with their standard errors:
 *
 *   acc       = [argmax_i ll_i == gold]
 *   acc_norm  = [argmax_i ll_i / len(choice_i) == gold], len = the choice's character count (Python `len`: code
 *               points, without the target delimiter; not tokens, not bytes)
 *   exact_match (generation) = [prediction == answer]
 *
 * argmax takes the first maximum, as numpy does. The stderr of a mean is lm-eval's `mean_stderr`: the sample
 * standard deviation (n − 1) over √n. A group's micro average (MMLU, lm-eval `weight_by_size`) has lm-eval's
 * pooled stderr (`pooled_sample_stderr`); its macro average (mean of the subjects, as QLoRA reports MMLU) has
 * √(Σ se_i²) / k, the stderr of a mean of independent means.
 */
export interface MetricValue {
  value: number;
  stderr: number | null;
}

/** Index of the first maximum. */
export function argmax(xs: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

/** Character count as Python's len() gives it: Unicode code points. */
export function pythonLength(s: string): number {
  return [...s].length;
}

/** The acc and acc_norm predictions of one item from its choices' log-likelihoods. */
export function multipleChoicePredictions(
  loglik: readonly number[],
  choices: readonly string[],
): { acc: number; accNorm: number } {
  return {
    acc: argmax(loglik),
    accNorm: argmax(loglik.map((ll, i) => ll / pythonLength(choices[i]!))),
  };
}

/** Mean with lm-eval's mean_stderr (null for fewer than two values). */
export function meanWithStderr(xs: readonly number[]): MetricValue {
  const n = xs.length;
  if (n === 0) return { value: NaN, stderr: null };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { value: mean, stderr: null };
  const variance = xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1);
  return { value: mean, stderr: Math.sqrt(variance) / Math.sqrt(n) };
}

/** Micro average of groups (weighted by size) with lm-eval's pooled_sample_stderr. */
export function microAverage(groups: readonly { metric: MetricValue; size: number }[]): MetricValue {
  const total = groups.reduce((a, g) => a + g.size, 0);
  const value = groups.reduce((a, g) => a + g.metric.value * g.size, 0) / total;
  if (total - groups.length <= 0 || groups.some((g) => g.metric.stderr === null && g.size > 1)) {
    return { value, stderr: null };
  }
  const pooledVar =
    groups.reduce((a, g) => a + (g.size - 1) * (g.metric.stderr ?? 0) ** 2 * g.size, 0) /
    (total - groups.length);
  return { value, stderr: Math.sqrt(pooledVar / total) };
}

/** Unweighted mean of group metrics; stderr √(Σ se²)/k (null when a group has none). */
export function macroAverage(groups: readonly MetricValue[]): MetricValue {
  const k = groups.length;
  const value = groups.reduce((a, g) => a + g.value, 0) / k;
  if (groups.some((g) => g.stderr === null)) return { value, stderr: null };
  return { value, stderr: Math.sqrt(groups.reduce((a, g) => a + g.stderr! ** 2, 0)) / k };
}

/**
 * The answer in a generated output (LLM-Adapters `extract_answer`): the output is cut at `cutAt` when given
 * (the text before it) and trimmed; the prediction is the first match of `regex`, or "" when nothing matches.
 * Without a regex, the trimmed output's first line.
 */
export function extractAnswer(output: string, regex: string | null, cutAt?: string): string {
  const at = cutAt ? output.indexOf(cutAt) : -1;
  const text = (at >= 0 ? output.slice(0, at) : output).trim();
  if (regex === null) return text.split('\n')[0]!.trim();
  const m = new RegExp(regex).exec(text);
  return m ? m[0] : '';
}
