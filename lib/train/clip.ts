/**
 * Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_(params, maxNorm) (L2 norm): the norm is taken
 * over all gradients together, and when it exceeds maxNorm every gradient is scaled by
 * maxNorm / (norm + 1e-6), so their directions are kept. The norm before clipping is what gets logged.
 *
 * The sum of squares is accumulated in float64 (torch accumulates per-tensor float32 norms); the difference is
 * far below float32 rounding of the gradients themselves.
 */

/** torch adds this to the norm before dividing, so a zero gradient never divides by zero. */
export const CLIP_EPS = 1e-6;

/** L2 norm of all gradients together. */
export function globalGradNorm(grads: Iterable<Float32Array>): number {
  let sum = 0;
  for (const g of grads) {
    for (let i = 0; i < g.length; i++) {
      const x = g[i]!;
      sum += x * x;
    }
  }
  return Math.sqrt(sum);
}

/**
 * Clips in place. `maxNorm` ≤ 0 (or Infinity) disables clipping but still measures the norm. Returns the norm
 * before clipping and the factor applied (1 when nothing was clipped).
 */
export function clipGradNorm(
  grads: Iterable<Float32Array>,
  maxNorm: number,
): { norm: number; scale: number } {
  const list = [...grads];
  const norm = globalGradNorm(list);
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm) || !Number.isFinite(norm)) return { norm, scale: 1 };
  const coef = maxNorm / (norm + CLIP_EPS);
  if (coef >= 1) return { norm, scale: 1 };
  for (const g of list) for (let i = 0; i < g.length; i++) g[i] = g[i]! * coef;
  return { norm, scale: coef };
}
