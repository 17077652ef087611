/**
 * How far a quantized weight is from the original: the relative Frobenius error ‖W − deq(W)‖ / ‖W‖ (the number
 * the quantizer reports per layer) and the largest absolute error. Computed in float64 over row slices, so it
 * never allocates a second full-size tensor next to the original.
 */
import { dequantizeRows, quantizedShape, type QuantizedWeight } from './quantized-weight.ts';

export interface ReconstructionError {
  /** ‖W − deq(W)‖_F / ‖W‖_F; 0 for an all-zero W that reconstructs exactly. */
  relativeFrobenius: number;
  maxAbs: number;
  /** ‖W‖_F, for context (a relative error on a near-zero tensor is not alarming). */
  frobenius: number;
}

/** Elements dequantized per slice: small enough to stay in cache, large enough to amortise the call. */
const SLICE_ELEMENTS = 1 << 16;

export function reconstructionError(original: Float32Array, w: QuantizedWeight): ReconstructionError {
  const shape = quantizedShape(w);
  const rows = shape.length === 0 ? 1 : shape[0]!;
  const cols = rows === 0 ? 0 : original.length / rows;
  if (!Number.isInteger(cols) || rows * cols !== original.length) {
    throw new RangeError(
      `original has ${original.length} values, quantized weight shape is [${shape.join(', ')}]`,
    );
  }
  const rowsPerSlice = Math.max(1, Math.floor(SLICE_ELEMENTS / Math.max(cols, 1)));
  const buf = new Float32Array(rowsPerSlice * cols);
  let errSq = 0;
  let refSq = 0;
  let maxAbs = 0;
  for (let r = 0; r < rows; r += rowsPerSlice) {
    const rEnd = Math.min(rows, r + rowsPerSlice);
    dequantizeRows(w, buf, r, rEnd);
    const base = r * cols;
    const count = (rEnd - r) * cols;
    for (let i = 0; i < count; i++) {
      const x = original[base + i]!;
      const d = x - buf[i]!;
      errSq += d * d;
      refSq += x * x;
      const a = Math.abs(d);
      if (a > maxAbs) maxAbs = a;
    }
  }
  const frobenius = Math.sqrt(refSq);
  const relativeFrobenius = refSq > 0 ? Math.sqrt(errSq / refSq) : errSq > 0 ? Infinity : 0;
  return { relativeFrobenius, maxAbs, frobenius };
}
