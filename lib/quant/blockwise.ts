/**
 * The two steps bitsandbytes' blockwise quantizers (4-bit and 8-bit) share: per-block absmax of the flattened
 * tensor, and the float32 reciprocal each value of a block is multiplied by before its code is chosen.
 */

const MIN_ABSMAX = Math.fround(1e-38);

/**
 * The reciprocal bnb scales a block by: float32(1 / absmax). An all-zero block (absmax 0) would give
 * 0 · ∞ = NaN; the reference clamps absmax to ≥ 1e-38 first, so zeros scale to 0 and take the exact-zero code.
 * (bnb's CUDA kernel instead lets the NaN fall through to code 0; both dequantize to 0 because absmax is 0.)
 */
export function blockReciprocal(absmax: number): number {
  return Math.fround(1 / Math.max(absmax, MIN_ABSMAX));
}

/**
 * Per-block max |x| in float32. Throws a RangeError naming the index of the first NaN/±Inf, because a non-finite
 * weight would poison its whole block (and, through the mean offset, every block under double quantization).
 */
export function blockAbsmax(values: Float32Array, blockSize: number): Float32Array {
  const n = values.length;
  const blocks = Math.ceil(n / blockSize);
  const absmax = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(n, (b + 1) * blockSize);
    let m = 0;
    for (let i = b * blockSize; i < end; i++) {
      const a = Math.abs(values[i]!);
      // `!(a <= MAX)` is true for NaN and Infinity alike.
      if (!(a <= 3.4028234663852886e38)) throw new RangeError(`value at flat index ${i} is ${values[i]}`);
      if (a > m) m = a;
    }
    absmax[b] = m;
  }
  return absmax;
}
