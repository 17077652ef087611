/**
 * Small deterministic random numbers (generated test checkpoints, adapter initialisation, gradient checks):
 * mulberry32 (32-bit state, fast, good enough for weights) and Box-Muller normals. Same seed, same numbers: 32-bit integer math, plus Math.log/cos/sin, which
 * V8 computes with the same fdlibm port on every platform.
 */

/** A uniform generator on [0, 1) from a 32-bit seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 32-bit FNV-1a of a string: derives per-tensor seeds, so a tensor's values depend on (seed, name) only. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Fills a Float32Array with `mean + std · N(0, 1)` samples (Box-Muller, both outputs used). */
export function fillNormal(out: Float32Array, rand: () => number, std = 1, mean = 0): Float32Array {
  for (let i = 0; i < out.length; i += 2) {
    // 1 - u is in (0, 1], so the log is finite.
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const theta = 2 * Math.PI * rand();
    out[i] = mean + std * r * Math.cos(theta);
    if (i + 1 < out.length) out[i + 1] = mean + std * r * Math.sin(theta);
  }
  return out;
}

/** `n` float64 samples of N(0, scale²) (Box-Muller, one output per pair of draws). */
export function randomNormal(n: number, rand: () => number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12);
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  }
  return out;
}
