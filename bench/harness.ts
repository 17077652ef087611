/** Shared benchmark helpers: timing by median of repeated runs, and the results-file entry type. */
export interface BenchEntry {
  /** Stable across runs, e.g. `moka.fused_vs_materialized.fwd_bwd.4096x4096`. */
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  baselineValue?: number;
  /** value relative to the baseline measured in the same run, stated so that higher is better. */
  ratio?: number;
  notes?: string;
}

export interface Suite {
  name: string;
  run: () => Promise<BenchEntry[]>;
}

/** Median wall time in milliseconds of `fn` after `warmup` untimed calls. */
export async function medianMs(fn: () => Promise<unknown>, runs = 5, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Deterministic pseudo-random float32 data in [-1, 1). */
export function randomFloat32(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

export const round = (x: number, digits = 3) => Number(x.toPrecision(digits + 1));

/**
 * Median times of `a` and `b`, measured alternately so that load from other processes on the machine hits both
 * alike.
 */
export async function interleavedMedians(
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
  runs: number,
): Promise<[number, number]> {
  await a();
  await b();
  const ta: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i < runs; i++) {
    ta.push(await medianMs(a, 1, 0));
    tb.push(await medianMs(b, 1, 0));
  }
  const med = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  return [med(ta), med(tb)];
}
