/**
 * NF4 (4-bit NormalFloat, QLoRA) blockwise quantization, byte-compatible with bitsandbytes.
 *
 * A tensor is flattened row-major and cut into blocks of `blockSize` consecutive values (a final partial block
 * gets its own absmax). Each value is scaled by its block's reciprocal absmax in float32 and mapped to the nearest
 * of 16 fixed levels by the midpoint decision tree of bnb's CUDA kernel (strict `>`, so an exact midpoint goes to
 * the lower code). Two codes are packed per byte with the FIRST element in the HIGH nibble: bnb's order, the
 * opposite of ONNX's int4 packing. See shared/reference/quantization-formats.md §1–2.
 *
 * The absmax values can be compressed further by double quantization (see double-quant.ts); `Nf4Weight.absmax`
 * always holds the float32 absmax that dequantization multiplies by, i.e. the restored values when double quantized.
 */
import { dtypeFromTorchName } from '../model/dtype-convert.ts';
import { blockAbsmax, blockReciprocal } from './blockwise.ts';
import { doubleQuantizeAbsmax, restoreAbsmax, type DoubleQuantState } from './double-quant.ts';

/** The 16 NF4 levels, indexed by code: float32 literals exactly as bnb's `get_4bit_type("nf4")` returns them. */
export const NF4_CODE: Float32Array = Float32Array.of(
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
);

/**
 * Decision thresholds between code i and i+1, as the float32 constants (`…f` literals) of bnb's `dQuantizeNF4`.
 * A scaled value strictly above `NF4_MIDPOINTS[i]` takes a code above i.
 */
export const NF4_MIDPOINTS: Float32Array = Float32Array.of(
  -0.8480964004993439,
  -0.6106329262256622,
  -0.4599952697753906,
  -0.33967943489551544,
  -0.23460740596055984,
  -0.13791173323988914,
  -0.045525018125772476,
  0.03979014977812767,
  0.1202552504837513,
  0.2035212516784668,
  0.2920137718319893,
  0.3893125355243683,
  0.5016634166240692,
  0.6427869200706482,
  0.8614784181118011,
);

/** Block sizes bitsandbytes accepts for 4-bit quantization. */
export const BNB_BLOCK_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096] as const;

/** The default block size of bnb `quantize_4bit` and of transformers' `BitsAndBytesConfig`. */
export const NF4_DEFAULT_BLOCK_SIZE = 64;

/** Torch dtype the weight had before quantization; bnb records it (`quant_state.dtype`) and dequantizes back to it. */
export type SourceDtype = 'F32' | 'F16' | 'BF16';

/** A quant state's `dtype` ("float32", "float16" or "bfloat16") as a SourceDtype, or null for anything else. */
export function sourceDtypeFromTorchName(name: unknown): SourceDtype | null {
  const d = typeof name === 'string' ? dtypeFromTorchName(name) : null;
  return d === 'F64' ? null : d;
}

export interface Nf4Weight {
  format: 'nf4';
  /** Original shape, e.g. [out, in] for a Linear weight. */
  shape: number[];
  /** Element count of `shape`. */
  numel: number;
  blockSize: number;
  /** ceil(numel / 2) bytes; byte i = (code[2i] << 4) | code[2i+1]; an odd numel pads the last low nibble with 0. */
  packed: Uint8Array;
  /** One float32 per block: what dequantization multiplies by (restored values when double quantized). */
  absmax: Float32Array;
  /** The 16 levels used to decode (NF4_CODE when quantized here; `quant_map` when read from a checkpoint). */
  quantMap: Float32Array;
  /** Present when the absmax values are stored 8-bit (bnb `compress_statistics`, HF `bnb_4bit_use_double_quant`). */
  doubleQuant: DoubleQuantState | null;
  dtype: SourceDtype;
}

export interface Nf4Options {
  /** Default 64. Must be one of BNB_BLOCK_SIZES. */
  blockSize?: number;
  /** Quantize the absmax values to 8 bits (blocks of 256, mean offset). Default false, as in bnb. */
  doubleQuant?: boolean;
  /** The dtype the weight came in (recorded in the quant state). Default 'F32'. */
  dtype?: SourceDtype;
}

/** Validates a bnb block size, with a message saying what is allowed. */
export function checkNf4BlockSize(blockSize: number): void {
  if (!(BNB_BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    throw new RangeError(
      `NF4 block size ${blockSize} is not supported; use one of ${BNB_BLOCK_SIZES.join(', ')} (bitsandbytes' sizes)`,
    );
  }
}

/** The code of 0.0, also what bnb writes into the padding nibble of an odd-length tensor. */
export const NF4_ZERO_CODE = 7;

const T = NF4_MIDPOINTS;
const T0 = T[0]!;
const T1 = T[1]!;
const T2 = T[2]!;
const T3 = T[3]!;
const T4 = T[4]!;
const T5 = T[5]!;
const T6 = T[6]!;
const T7 = T[7]!;
const T8 = T[8]!;
const T9 = T[9]!;
const T10 = T[10]!;
const T11 = T[11]!;
const T12 = T[12]!;
const T13 = T[13]!;
const T14 = T[14]!;

/**
 * The NF4 code of a scaled value (a float32 in [-1, 1]): bnb's `dQuantizeNF4` decision tree, same thresholds,
 * same strict comparisons. NaN falls through every `>` to code 0, as on the GPU.
 */
export function nf4Code(x: number): number {
  if (x > T7) {
    if (x > T11) {
      if (x > T13) return x > T14 ? 15 : 14;
      return x > T12 ? 13 : 12;
    }
    if (x > T9) return x > T10 ? 11 : 10;
    return x > T8 ? 9 : 8;
  }
  if (x > T3) {
    if (x > T5) return x > T6 ? 7 : 6;
    return x > T4 ? 5 : 4;
  }
  if (x > T1) return x > T2 ? 3 : 2;
  return x > T0 ? 1 : 0;
}

/**
 * A faster route to exactly `nf4Code`: the scaled value's bucket b = trunc((x + 1) · 2048) looks up its code in a
 * table; only the 15 buckets holding a threshold fall back to the tree. Exact because b is a non-decreasing
 * function of x, so every x in a bucket without a threshold lies on the same side of each threshold: its code
 * is the number of thresholds whose bucket is below b.
 */
const LUT_SCALE = 2048;
const LUT_SIZE = 2 * LUT_SCALE + 1;
const AMBIGUOUS = -1;
function bucketOf(x: number): number {
  return ((x + 1) * LUT_SCALE) | 0;
}
const NF4_LUT: Int8Array = (() => {
  const lut = new Int8Array(LUT_SIZE);
  const thresholdBuckets = Array.from(NF4_MIDPOINTS, bucketOf);
  for (let b = 0; b < LUT_SIZE; b++) {
    lut[b] = thresholdBuckets.includes(b) ? AMBIGUOUS : thresholdBuckets.filter((tb) => tb < b).length;
  }
  return lut;
})();

/** `nf4Code` through the bucket table (values outside [-1, 1] clamp to the end codes, like the tree). */
export function nf4CodeFast(x: number): number {
  // Out of range (and NaN): the tree, which clamps; scaled block values only get here by a last-bit excess.
  if (!(x >= -1 && x <= 1)) return nf4Code(x);
  const c = NF4_LUT[bucketOf(x)]!;
  return c === AMBIGUOUS ? nf4Code(x) : c;
}

/** Quantizes a float32 tensor to NF4 (values flattened row-major; `shape` is recorded for dequantization). */
export function quantizeNf4(
  values: Float32Array,
  shape: readonly number[],
  options: Nf4Options = {},
): Nf4Weight {
  const blockSize = options.blockSize ?? NF4_DEFAULT_BLOCK_SIZE;
  checkNf4BlockSize(blockSize);
  const numel = shape.reduce((a, d) => a * d, 1);
  if (numel !== values.length) {
    throw new RangeError(
      `shape [${shape.join(', ')}] has ${numel} elements but ${values.length} values were given`,
    );
  }
  const absmax = blockAbsmax(values, blockSize);
  const packed = new Uint8Array(Math.ceil(numel / 2));
  for (let b = 0; b < absmax.length; b++) {
    const inv = blockReciprocal(absmax[b]!);
    const end = Math.min(numel, (b + 1) * blockSize);
    // Block sizes are even, so a block starts on a byte boundary and pairs never straddle blocks.
    for (let i = b * blockSize; i < end; i += 2) {
      const hi = nf4CodeFast(Math.fround(values[i]! * inv));
      // An odd tensor is padded with one 0.0 before coding (both bnb kernels), which takes the zero code 7.
      const lo = i + 1 < end ? nf4CodeFast(Math.fround(values[i + 1]! * inv)) : NF4_ZERO_CODE;
      packed[i >> 1] = (hi << 4) | lo;
    }
  }
  let doubleQuant: DoubleQuantState | null = null;
  let effectiveAbsmax = absmax;
  if (options.doubleQuant) {
    doubleQuant = doubleQuantizeAbsmax(absmax);
    effectiveAbsmax = restoreAbsmax(doubleQuant);
  }
  return {
    format: 'nf4',
    shape: [...shape],
    numel,
    blockSize,
    packed,
    absmax: effectiveAbsmax,
    quantMap: NF4_CODE.slice(),
    doubleQuant,
    dtype: options.dtype ?? 'F32',
  };
}

/** The 4-bit code of flat element i (high nibble for even i). */
export function nf4CodeAt(packed: Uint8Array, i: number): number {
  const byte = packed[i >> 1]!;
  return i & 1 ? byte & 0x0f : byte >> 4;
}

/** Dequantizes to float32: w = quantMap[code] · absmax[block], one float32 multiply per element, as bnb does. */
export function dequantizeNf4(w: Nf4Weight): Float32Array {
  const out = new Float32Array(w.numel);
  dequantizeNf4Into(w, out, 0, w.numel);
  return out;
}

/** Dequantizes flat elements [start, end) into out[0 .. end-start) (lets callers stream a big tensor in slices). */
export function dequantizeNf4Into(w: Nf4Weight, out: Float32Array, start: number, end: number): void {
  const { packed, absmax, quantMap, blockSize } = w;
  if (start < 0 || end > w.numel || start > end) throw new RangeError(`bad element range [${start}, ${end})`);
  let i = start;
  while (i < end) {
    const b = Math.floor(i / blockSize);
    const scale = absmax[b]!;
    const blockEnd = Math.min(end, (b + 1) * blockSize);
    for (; i < blockEnd; i++) out[i - start] = quantMap[nf4CodeAt(packed, i)]! * scale;
  }
}
