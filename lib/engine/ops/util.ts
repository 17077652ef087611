/** Shared checks for op definitions. */
import { isFloat, type DType } from '../dtype.ts';
import { opError, type Tensor } from '../graph.ts';

export function requireFloat(op: string, inputs: readonly Tensor[], ...ts: Tensor[]): DType {
  for (const t of ts) {
    if (!isFloat(t.dtype)) opError(op, inputs, `expected a floating-point tensor, got ${t.dtype}`);
  }
  return ts[0]!.dtype;
}

export function requireSameDtype(op: string, inputs: readonly Tensor[], ...ts: Tensor[]): DType {
  const d = ts[0]!.dtype;
  for (const t of ts) {
    if (t.dtype !== d) opError(op, inputs, `dtypes differ (${ts.map((x) => x.dtype).join(' vs ')})`);
  }
  return d;
}

export function requireRank(op: string, inputs: readonly Tensor[], t: Tensor, min: number, max = Infinity) {
  if (t.rank < min || t.rank > max) {
    const want = max === Infinity ? `at least ${min}` : min === max ? `${min}` : `${min}..${max}`;
    opError(op, inputs, `expected rank ${want}, got ${t.rank}`);
  }
}
