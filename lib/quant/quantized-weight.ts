/**
 * A 4-bit weight in either format, and the one call that turns it back into float32: what the engine uses to
 * build a graph around a frozen quantized weight, and what merge/export use to add ΔW to the weights training saw.
 */
import { dequantizeInt4, dequantizeInt4Rows, type Int4Weight } from './int4.ts';
import { dequantizeNf4, dequantizeNf4Into, type Nf4Weight } from './nf4.ts';

export type QuantizedWeight = Nf4Weight | Int4Weight;
export type QuantFormat = QuantizedWeight['format'];

/** The logical (unquantized) shape: [out, in] for a Linear weight. */
export function quantizedShape(w: QuantizedWeight): number[] {
  return w.format === 'nf4' ? [...w.shape] : [w.n, w.k];
}

/** Row-major float32 values of the weight, exactly what the format's kernels compute. */
export function dequantizeToFloat32(w: QuantizedWeight): Float32Array {
  return w.format === 'nf4' ? dequantizeNf4(w) : dequantizeInt4(w);
}

/**
 * Dequantizes rows [rowStart, rowEnd) of the weight viewed as [rows, cols] = [shape[0], numel/shape[0]] into
 * `out`, so a caller can walk a large weight with a small buffer.
 */
export function dequantizeRows(
  w: QuantizedWeight,
  out: Float32Array,
  rowStart: number,
  rowEnd: number,
): void {
  if (w.format === 'int4') {
    dequantizeInt4Rows(w, out, rowStart, rowEnd);
    return;
  }
  const cols = w.shape.length === 0 ? 1 : w.numel / w.shape[0]!;
  dequantizeNf4Into(w, out, rowStart * cols, rowEnd * cols);
}
