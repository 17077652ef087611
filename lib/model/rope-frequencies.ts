/**
 * Rotary position embedding tables, computed the way Hugging Face transformers computes them for LLaMA, in
 * float32: inverse frequencies θ^(−2i/d) (Llama 3.1/3.2 `rope_scaling` rescales them), then per position the
 * angle p·inv_freq and its cos/sin. Every step is rounded to float32 where torch would hold a float32 tensor,
 * so the tables match HF's to the last bit or two (torch's float32 pow/cos/sin kernels are not correctly
 * rounded, ours are: both are within an ulp of the true value).
 *
 * The tables are [positions, head_dim/2]: the engine's `rope` pairs element i with i + head_dim/2 (HF's
 * rotate_half) and uses the same angle for both halves, which is HF's `emb = cat(freqs, freqs)`.
 */
import type { LlamaConfig } from './config.ts';

const f32 = Math.fround;

/**
 * Inverse frequencies (length head_dim/2) for a config, as float32 values.
 * Llama 3 scaling (transformers `_compute_llama3_parameters`): with λ = 2π / inv and L the original context,
 * wavelengths above L/low_freq_factor are divided by `factor`, those below L/high_freq_factor are kept, and
 * those between are interpolated by s = (L/λ − low) / (high − low): inv' = (1 − s)·inv/factor + s·inv.
 */
export function ropeInverseFrequencies(
  cfg: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>,
): Float32Array {
  const d = cfg.headDim;
  const half = d / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    // torch: 1.0 / (base ** (arange(0, d, 2).float() / d)), all float32.
    inv[i] = f32(1 / f32(Math.pow(cfg.ropeTheta, f32((2 * i) / d))));
  }
  const s = cfg.ropeScaling;
  if (!s) return inv;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = f32((2 * Math.PI) / f);
    if (wavelen > lowWavelen) {
      inv[i] = f32(f / s.factor);
    } else if (wavelen >= highWavelen) {
      // Medium band: interpolate between the scaled and the original frequency.
      const smooth = f32(
        f32(f32(s.originalMaxPositionEmbeddings / wavelen) - s.lowFreqFactor) /
          (s.highFreqFactor - s.lowFreqFactor),
      );
      inv[i] = f32(f32(f32(f32(1 - smooth) * f) / s.factor) + f32(smooth * f));
    }
  }
  return inv;
}

/**
 * cos/sin tables [positions.length, head_dim/2] for the given positions (float32, HF rounding: the angle is the
 * float32 product position·inv_freq, then cos/sin of that float32 angle).
 */
export function ropeCosSin(
  invFreq: Float32Array,
  positions: ArrayLike<number>,
): { cos: Float32Array; sin: Float32Array } {
  const h = invFreq.length;
  const n = positions.length;
  const cos = new Float32Array(n * h);
  const sin = new Float32Array(n * h);
  for (let s = 0; s < n; s++) {
    const p = positions[s]!;
    for (let i = 0; i < h; i++) {
      const angle = f32(p * invFreq[i]!);
      cos[s * h + i] = Math.cos(angle);
      sin[s * h + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** Positions start, start+1, …, start+count−1. */
export function positionRange(start: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i);
}

/**
 * cos/sin tables for positions 0…seqLen−1, built once per sequence length (a run sees a few bucketed lengths,
 * and rebuilding costs seqLen · head_dim/2 cos and sin per batch). The tables are shared: never write to them.
 */
export class RopeTableCache {
  private readonly tables = new Map<number, { cos: Float32Array; sin: Float32Array }>();

  constructor(private readonly invFreq: Float32Array) {}

  get(seqLen: number): { cos: Float32Array; sin: Float32Array } {
    let t = this.tables.get(seqLen);
    if (!t) {
      t = ropeCosSin(this.invFreq, positionRange(0, seqLen));
      this.tables.set(seqLen, t);
    }
    return t;
  }
}
