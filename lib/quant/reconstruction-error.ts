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

/**
 * Sums the squared error and the squared original in float64, and tracks the largest absolute error, over
 * slices of a tensor given in any order: the running totals of `reconstructionError` and of the streaming
 * quantizer, which sees a large weight a block of rows at a time.
 */
export class ErrorAccumulator {
  private errSq = 0;
  private refSq = 0;
  private maxAbs = 0;

  /** Adds a slice of original values and their dequantized values (the same length). */
  add(original: Float32Array, dequantized: Float32Array): void {
    if (original.length !== dequantized.length) {
      throw new RangeError(`${original.length} original values, ${dequantized.length} dequantized`);
    }
    for (let i = 0; i < original.length; i++) {
      const x = original[i]!;
      const d = x - dequantized[i]!;
      this.errSq += d * d;
      this.refSq += x * x;
      const a = Math.abs(d);
      if (a > this.maxAbs) this.maxAbs = a;
    }
  }

  result(): ReconstructionError {
    const { errSq, refSq } = this;
    const frobenius = Math.sqrt(refSq);
    const relativeFrobenius = refSq > 0 ? Math.sqrt(errSq / refSq) : errSq > 0 ? Infinity : 0;
    return { relativeFrobenius, maxAbs: this.maxAbs, frobenius };
  }
}

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
  const acc = new ErrorAccumulator();
  for (let r = 0; r < rows; r += rowsPerSlice) {
    const rEnd = Math.min(rows, r + rowsPerSlice);
    dequantizeRows(w, buf, r, rEnd);
    const count = (rEnd - r) * cols;
    acc.add(original.subarray(r * cols, r * cols + count), buf.subarray(0, count));
  }
  return acc.result();
}
