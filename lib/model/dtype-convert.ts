/**
 * Conversions between the floating-point storage formats of checkpoints (F16, BF16, F64) and float32, the
 * format the engine computes in. Bit-exact: widening is exact; narrowing rounds to nearest, ties to even (what
 * PyTorch's `.to(torch.float16/bfloat16)` does), keeps the sign of zero, and maps NaN to a quiet NaN.
 *
 * All multi-byte views assume a little-endian host, which is what safetensors stores; `assertLittleEndianHost`
 * turns the (hypothetical) big-endian host into a clear error instead of silently wrong numbers.
 */
import { float32BitsToFloat16Bits, float32ToFloat16Bits } from '../engine/dtype.ts';
import { endianness } from 'node:os';

/**
 * Bits per element of every safetensors dtype, as the reference implementation lists them
 * (huggingface/safetensors `Dtype::bitsize`): a header may use any of them, whether moka computes with it or not.
 * F4 and F6_* pack several elements per byte; a tensor of them must fill whole bytes.
 */
export const DTYPE_BITS = {
  F64: 64,
  F32: 32,
  F16: 16,
  BF16: 16,
  I64: 64,
  I32: 32,
  I16: 16,
  I8: 8,
  U64: 64,
  U32: 32,
  U16: 16,
  U8: 8,
  BOOL: 8,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  C64: 64,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
} as const;
export type SafetensorsDtype = keyof typeof DTYPE_BITS;

/** Bytes per element of the dtypes whose elements are whole bytes (every dtype but F4 and F6_*). */
export const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  F8_E4M3FNUZ: 1,
  F8_E5M2FNUZ: 1,
  C64: 8,
} as const satisfies Partial<Record<SafetensorsDtype, number>>;

/** The dtypes `decodeFloat32` / `encodeFloat32` convert (weights of a HF checkpoint are one of these). */
export const FLOAT_DTYPES = ['F32', 'F16', 'BF16', 'F64'] as const;
export type FloatDtype = (typeof FLOAT_DTYPES)[number];

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return Object.hasOwn(DTYPE_BITS, s);
}

export function isFloatDtype(s: string): s is FloatDtype {
  return (FLOAT_DTYPES as readonly string[]).includes(s);
}

/** `torch_dtype` spellings of config.json ↔ safetensors dtypes. */
const TORCH_NAMES: Record<FloatDtype, string> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  F64: 'float64',
};

export function torchDtypeName(dtype: FloatDtype): string {
  return TORCH_NAMES[dtype];
}

/** The inverse of `torchDtypeName`: the dtype of an exact `torch_dtype` spelling ("bfloat16", …), or null. */
export function dtypeFromTorchName(name: string): FloatDtype | null {
  return FLOAT_DTYPES.find((d) => TORCH_NAMES[d] === name) ?? null;
}

/** Accepts `float32|float16|bfloat16|float64`, their short forms `f32|fp32|f16|fp16|bf16|f64`, or `F32`-style names. */
export function parseFloatDtype(name: string): FloatDtype | null {
  const n = name.toLowerCase();
  const aliases: Record<string, FloatDtype> = {
    float32: 'F32',
    f32: 'F32',
    fp32: 'F32',
    float16: 'F16',
    f16: 'F16',
    fp16: 'F16',
    half: 'F16',
    bfloat16: 'BF16',
    bf16: 'BF16',
    float64: 'F64',
    f64: 'F64',
    fp64: 'F64',
  };
  return aliases[n] ?? null;
}

/** Number of elements of a shape (1 for a 0-rank tensor). */
export function numElements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function assertLittleEndianHost(): void {
  if (endianness() !== 'LE') {
    throw new Error('moka reads and writes little-endian tensors and needs a little-endian host');
  }
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

// float16 → float32 through a 65536-entry table: built once (256 KiB), then one lookup per element.
let f16Table: Float32Array | null = null;

function buildF16Table(): Float32Array {
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0x1f) {
      // Inf or NaN: keep the payload (shifted into the float32 mantissa) so NaNs round-trip.
      bits[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    } else if (exp === 0) {
      if (mant === 0) {
        bits[h] = sign >>> 0;
      } else {
        // Subnormal: value = mant · 2^-24; normalise the mantissa into float32's implicit-one form.
        let e = -14;
        let m = mant;
        while ((m & 0x400) === 0) {
          m <<= 1;
          e--;
        }
        bits[h] = (sign | ((e + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
      }
    } else {
      bits[h] = (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
    }
  }
  return new Float32Array(bits.buffer);
}

function f16ToF32Table(): Float32Array {
  f16Table ??= buildF16Table();
  return f16Table;
}

/** One float16 bit pattern to its float32 value. */
export function f16BitsToF32(h: number): number {
  return f16ToF32Table()[h & 0xffff]!;
}

/** One bfloat16 bit pattern to its float32 value (bf16 is the top half of a float32). */
export function bf16BitsToF32(b: number): number {
  scratchU32[0] = (b & 0xffff) << 16;
  return scratchF32[0]!;
}

/** The float32 bit pattern of `x` after rounding it to float32. */
function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

/** float32 bits → bfloat16 bits, round to nearest even. */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x0040) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** A number (rounded to float32 first, as the engine would hold it) to float16 bits. */
export function f32ToF16Bits(x: number): number {
  return float32ToFloat16Bits(x);
}

/** A number (rounded to float32 first) to bfloat16 bits. */
export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(f32Bits(x));
}

export function f16ToF32Array(src: Uint16Array): Float32Array {
  const table = f16ToF32Table();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

export function bf16ToF32Array(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return new Float32Array(out.buffer);
}

export function f32ToF16Array(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = float32BitsToFloat16Bits(bits[i]!);
  return out;
}

export function f32ToBf16Array(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  return out;
}

/** A typed view of `bytes`, copying only when the bytes are not aligned for the element type. */
function alignedView<T>(
  bytes: Uint8Array,
  elementBytes: number,
  make: (buf: ArrayBufferLike, offset: number, length: number) => T,
): T {
  const length = bytes.byteLength / elementBytes;
  if (bytes.byteOffset % elementBytes === 0) return make(bytes.buffer, bytes.byteOffset, length);
  const copy = bytes.slice();
  return make(copy.buffer, 0, length);
}

/**
 * Little-endian tensor bytes of a float dtype → float32 values. F32 input is copied, so the result never aliases
 * the caller's buffer. Throws (a plain Error: callers add the file/tensor context) for non-float dtypes.
 */
export function decodeFloat32(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array {
  assertLittleEndianHost();
  if (!isFloatDtype(dtype)) {
    throw new Error(`dtype ${dtype} is not a floating-point type; cannot convert it to float32`);
  }
  if (bytes.byteLength % DTYPE_BYTES[dtype] !== 0) {
    throw new Error(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  switch (dtype) {
    case 'F32':
      return alignedView(bytes, 4, (b, o, n) => new Float32Array(b, o, n)).slice();
    case 'F16':
      return f16ToF32Array(alignedView(bytes, 2, (b, o, n) => new Uint16Array(b, o, n)));
    case 'BF16':
      return bf16ToF32Array(alignedView(bytes, 2, (b, o, n) => new Uint16Array(b, o, n)));
    case 'F64':
      return Float32Array.from(alignedView(bytes, 8, (b, o, n) => new Float64Array(b, o, n)));
  }
}

/** float32 values → little-endian bytes of `dtype` (rounding to nearest even when narrowing). */
export function encodeFloat32(dtype: FloatDtype, values: Float32Array): Uint8Array {
  assertLittleEndianHost();
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.slice().buffer);
    case 'F16':
      return new Uint8Array(f32ToF16Array(values).buffer);
    case 'BF16':
      return new Uint8Array(f32ToBf16Array(values).buffer);
    case 'F64':
      return new Uint8Array(Float64Array.from(values).buffer);
  }
}

/**
 * Index of the first element of little-endian float tensor bytes that is NaN or ±Infinity, or -1 (also for
 * non-float dtypes). Reads the exponent bits directly (all ones = not finite), so it costs one pass and no decoding.
 */
export function firstNonFinite(dtype: SafetensorsDtype, bytes: Uint8Array): number {
  const view = <T>(size: number, make: (b: ArrayBufferLike, o: number, n: number) => T): T =>
    alignedView(bytes.subarray(0, bytes.byteLength - (bytes.byteLength % size)), size, make);
  switch (dtype) {
    case 'F32': {
      const u = view(4, (b, o, n) => new Uint32Array(b, o, n));
      for (let i = 0; i < u.length; i++) if ((u[i]! & 0x7f800000) === 0x7f800000) return i;
      return -1;
    }
    case 'F16':
    case 'BF16': {
      const mask = dtype === 'F16' ? 0x7c00 : 0x7f80;
      const u = view(2, (b, o, n) => new Uint16Array(b, o, n));
      for (let i = 0; i < u.length; i++) if ((u[i]! & mask) === mask) return i;
      return -1;
    }
    case 'F64': {
      const f = view(8, (b, o, n) => new Float64Array(b, o, n));
      for (let i = 0; i < f.length; i++) if (!Number.isFinite(f[i]!)) return i;
      return -1;
    }
    default:
      return -1;
  }
}
