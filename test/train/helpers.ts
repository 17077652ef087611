/** Small helpers of the trainer tests: metrics without timing fields, bit-exact parameter comparison. */
import { readFileSync } from 'node:fs';
import { TIMING_METRIC_KEYS } from '../../lib/train/trainer.ts';

/** metrics.jsonl as objects, without the fields that measure time (they differ between identical runs). */
export function metricsWithoutTiming(path: string): Record<string, unknown>[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const o = JSON.parse(l) as Record<string, unknown>;
      for (const k of TIMING_METRIC_KEYS) delete o[k];
      return o;
    });
}

/** True when both maps hold the same names with bit-identical float32 values. */
export function bitIdentical(
  a: ReadonlyMap<string, Float32Array>,
  b: ReadonlyMap<string, Float32Array>,
): boolean {
  if (a.size !== b.size) return false;
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y || y.length !== x.length) return false;
    const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
    for (let i = 0; i < xb.length; i++) if (xb[i] !== yb[i]) return false;
  }
  return true;
}

export function maxAbsDiff(
  a: ReadonlyMap<string, Float32Array>,
  b: ReadonlyMap<string, Float32Array>,
): number {
  let m = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  }
  return m;
}
