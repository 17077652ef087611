/**
 * Affine int4 blockwise quantization in the layout ONNX Runtime's com.microsoft MatMulNBits consumes, so a
 * quantized Linear weight feeds the op with no repacking (shared/reference/quantization-formats.md §4).
 *
 * For a weight W of shape [N = out, K = in] (an HF Linear weight maps row for row, no transpose):
 * - blocks run along K inside each row: kBlocks = ceil(K / blockSize), the last one possibly partial;
 * - B = uint8 [N, kBlocks, blockSize/2], two values per byte along K, the FIRST value in the LOW nibble
 *   (the opposite of bnb's NF4 packing); padding past K holds the zero point, so it decodes to exactly 0;
 * - scales = float32 [N · kBlocks] (row-major [N, kBlocks]);
 * - zero points (asymmetric only) = uint8 [N, ceil(kBlocks/2)], block 2j in the low nibble, a missing last
 *   high nibble = 8; symmetric weights omit them and MatMulNBits uses its default 8.
 * Dequantization: w = (q − zp) · scale.
 *
 * Scale and zero point follow ORT MLAS's reference quantizer: asymmetric takes the block range widened to
 * include 0, scale = (max − min)/15, zp = round(−min/scale); symmetric takes the block value of largest
 * magnitude M (with its sign) and scale = M / −8, so M itself is exactly representable (q = 0). All arithmetic
 * is float32 with round-half-away-from-zero, as in MLAS.
 */
import type { SourceDtype } from './nf4.ts';

/** Block sizes MatMulNBits accepts for 4 bits (a power of two ≥ 16; larger ones are rarely useful). */
export const INT4_BLOCK_SIZES = [16, 32, 64, 128, 256] as const;
export const INT4_DEFAULT_BLOCK_SIZE = 64;
/** MatMulNBits' implicit zero point for 4 bits: 2^(bits−1). */
export const INT4_DEFAULT_ZERO_POINT = 8;

export interface Int4Weight {
  format: 'int4';
  /** Rows = out features. */
  n: number;
  /** Columns = in features. */
  k: number;
  blockSize: number;
  symmetric: boolean;
  /** [n, kBlocks, blockSize/2] bytes, low nibble first. */
  packed: Uint8Array;
  /** [n · kBlocks] scales. */
  scales: Float32Array;
  /** [n, ceil(kBlocks/2)] packed zero points, or null for symmetric (implicit 8). */
  zeroPoints: Uint8Array | null;
  dtype: SourceDtype;
}

export interface Int4Options {
  /** Default 64; one of INT4_BLOCK_SIZES. */
  blockSize?: number;
  /** Symmetric (no zero points, zp = 8) instead of asymmetric. Default false (asymmetric, like ORT's tool). */
  symmetric?: boolean;
  dtype?: SourceDtype;
}

export function checkInt4BlockSize(blockSize: number): void {
  if (!(INT4_BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    throw new RangeError(
      `int4 block size ${blockSize} is not supported; use a power of two from 16 to 256 (${INT4_BLOCK_SIZES.join(', ')})`,
    );
  }
}

export function int4KBlocks(k: number, blockSize: number): number {
  return Math.ceil(k / blockSize);
}

/** C's roundf: halves go away from zero (JS Math.round sends −2.5 to −2). */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

const f32 = Math.fround;

/** Scale and zero point of one block, from its min and max (MLAS range2scalezp / range2scale). */
function blockScale(min: number, max: number, symmetric: boolean): { scale: number; zp: number } {
  if (symmetric) {
    const m = Math.abs(max) > Math.abs(min) ? max : min;
    return { scale: f32(m / -8), zp: INT4_DEFAULT_ZERO_POINT };
  }
  const lo = Math.min(min, 0);
  const hi = Math.max(max, 0);
  const scale = f32(f32(hi - lo) / 15);
  const zpFloat = scale !== 0 ? f32(0 - f32(lo / scale)) : lo;
  const zp = zpFloat < 0 ? 0 : zpFloat > 15 ? 15 : roundHalfAway(zpFloat);
  return { scale, zp };
}

/** Quantizes W [n, k] (row-major float32) to the MatMulNBits layout. */
export function quantizeInt4(
  values: Float32Array,
  shape: readonly number[],
  options: Int4Options = {},
): Int4Weight {
  const blockSize = options.blockSize ?? INT4_DEFAULT_BLOCK_SIZE;
  checkInt4BlockSize(blockSize);
  if (shape.length !== 2) {
    throw new RangeError(`int4 quantization needs a 2-D [out, in] weight, got shape [${shape.join(', ')}]`);
  }
  const [n, k] = shape as [number, number];
  if (n * k !== values.length) {
    throw new RangeError(`shape [${n}, ${k}] has ${n * k} elements but ${values.length} values were given`);
  }
  const symmetric = options.symmetric ?? false;
  const kBlocks = int4KBlocks(k, blockSize);
  const blob = blockSize / 2;
  const packed = new Uint8Array(n * kBlocks * blob);
  const scales = new Float32Array(n * kBlocks);
  const zpBytes = Math.ceil(kBlocks / 2);
  const zeroPoints = symmetric ? null : new Uint8Array(n * zpBytes).fill(INT4_DEFAULT_ZERO_POINT << 4);
  for (let row = 0; row < n; row++) {
    for (let kb = 0; kb < kBlocks; kb++) {
      const start = row * k + kb * blockSize;
      const len = Math.min(blockSize, k - kb * blockSize);
      let min = Infinity;
      let max = -Infinity;
      for (let j = 0; j < len; j++) {
        const v = values[start + j]!;
        if (!Number.isFinite(v)) throw new RangeError(`value at flat index ${start + j} is ${v}`);
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const { scale, zp } = blockScale(min, max, symmetric);
      scales[row * kBlocks + kb] = scale;
      if (zeroPoints) {
        const zi = row * zpBytes + (kb >> 1);
        zeroPoints[zi] = kb & 1 ? (zeroPoints[zi]! & 0x0f) | (zp << 4) : (zeroPoints[zi]! & 0xf0) | zp;
      }
      const recip = scale !== 0 ? f32(1 / scale) : 0;
      const out = (row * kBlocks + kb) * blob;
      for (let j = 0; j < blockSize; j += 2) {
        const q0 = j < len ? quantizeOne(values[start + j]!, recip, zp) : zp;
        const q1 = j + 1 < len ? quantizeOne(values[start + j + 1]!, recip, zp) : zp;
        packed[out + (j >> 1)] = q0 | (q1 << 4);
      }
    }
  }
  return {
    format: 'int4',
    n,
    k,
    blockSize,
    symmetric,
    packed,
    scales,
    zeroPoints,
    dtype: options.dtype ?? 'F32',
  };
}

function quantizeOne(v: number, recip: number, zp: number): number {
  const y = f32(f32(v * recip) + zp);
  // roundf(y) then clamp to [0, 15]: for y ≥ 0 roundf(y) = floor(y + 0.5) (exact in float64); for y < 0 both
  // end at 0 after the clamp. Cheaper than a sign branch in the hottest loop.
  const q = Math.floor(y + 0.5);
  return q < 0 ? 0 : q > 15 ? 15 : q;
}

/** Zero point of block kb of a row (8 when symmetric). */
export function int4ZeroPoint(w: Int4Weight, row: number, kb: number): number {
  if (!w.zeroPoints) return INT4_DEFAULT_ZERO_POINT;
  const byte = w.zeroPoints[row * Math.ceil(int4KBlocks(w.k, w.blockSize) / 2) + (kb >> 1)]!;
  return kb & 1 ? byte >> 4 : byte & 0x0f;
}

/** The 4-bit value of element (row, col). */
export function int4CodeAt(w: Int4Weight, row: number, col: number): number {
  const kBlocks = int4KBlocks(w.k, w.blockSize);
  const kb = Math.floor(col / w.blockSize);
  const j = col - kb * w.blockSize;
  const byte = w.packed[(row * kBlocks + kb) * (w.blockSize / 2) + (j >> 1)]!;
  return j & 1 ? byte >> 4 : byte & 0x0f;
}

/** Dequantizes to float32 [n, k]: (q − zp) · scale, one float32 multiply per element. */
export function dequantizeInt4(w: Int4Weight): Float32Array {
  const out = new Float32Array(w.n * w.k);
  dequantizeInt4Rows(w, out, 0, w.n);
  return out;
}

/** Dequantizes rows [rowStart, rowEnd) into out[0 .. (rowEnd−rowStart)·k) (for streaming a big weight). */
export function dequantizeInt4Rows(w: Int4Weight, out: Float32Array, rowStart: number, rowEnd: number): void {
  const { k, blockSize, packed, scales } = w;
  const kBlocks = int4KBlocks(k, blockSize);
  const blob = blockSize / 2;
  for (let row = rowStart; row < rowEnd; row++) {
    const base = (row - rowStart) * k;
    for (let kb = 0; kb < kBlocks; kb++) {
      const scale = scales[row * kBlocks + kb]!;
      const zp = int4ZeroPoint(w, row, kb);
      const len = Math.min(blockSize, k - kb * blockSize);
      const src = (row * kBlocks + kb) * blob;
      for (let j = 0; j < len; j++) {
        const byte = packed[src + (j >> 1)]!;
        const q = j & 1 ? byte >> 4 : byte & 0x0f;
        out[base + kb * blockSize + j] = (q - zp) * scale;
      }
    }
  }
}

/**
 * Attributes and input shapes of a com.microsoft MatMulNBits node computing x · dequant(W)ᵀ for this weight.
 * accuracy_level 0 keeps float activations (level 4 quantizes them to int8: ~0.5% error, see onnxruntime-notes §6).
 */
export function matMulNBitsSpec(w: Int4Weight): {
  attributes: { K: number; N: number; bits: 4; block_size: number; accuracy_level: 0 };
  bDims: [number, number, number];
  scalesDims: [number];
  zeroPointsDims: [number, number] | null;
} {
  const kBlocks = int4KBlocks(w.k, w.blockSize);
  return {
    attributes: { K: w.k, N: w.n, bits: 4, block_size: w.blockSize, accuracy_level: 0 },
    bDims: [w.n, kBlocks, w.blockSize / 2],
    scalesDims: [w.n * kBlocks],
    zeroPointsDims: w.zeroPoints ? [w.n, Math.ceil(kBlocks / 2)] : null,
  };
}
