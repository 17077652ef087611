/**
 * Element types of engine tensors, their ONNX enum values and the JS arrays that carry them across the
 * ORT boundary. bfloat16 exists inside graphs only: onnxruntime-node cannot pass it in or out.
 */
import type * as ort from 'onnxruntime-node';

export type DType =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'int64'
  | 'int32'
  | 'bool'
  | 'uint8'
  | 'int4'
  | 'uint4';

export const FLOAT_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64'];

export function isFloat(d: DType): boolean {
  return FLOAT_DTYPES.includes(d);
}

/** ONNX TensorProto.DataType values (int4/uint4 are 22/21, missing from onnx-proto's enum but accepted by ORT). */
export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
  uint4: 21,
  int4: 22,
};

/** Size in bits of one element. */
export const DTYPE_BITS: Record<DType, number> = {
  float32: 32,
  float16: 16,
  bfloat16: 16,
  float64: 64,
  int64: 64,
  int32: 32,
  bool: 8,
  uint8: 8,
  int4: 4,
  uint4: 4,
};

/** The ORT tensor type name used to feed/fetch this dtype from JS, or null when it cannot cross the boundary. */
export function ortTypeOf(d: DType): ort.Tensor.Type | null {
  switch (d) {
    case 'float32':
    case 'float16':
    case 'float64':
    case 'int64':
    case 'int32':
    case 'bool':
    case 'uint8':
      return d;
    default:
      return null;
  }
}

export type HostArray = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

/** Allocates a zeroed host array for `n` elements of `d` (float16 as raw Uint16Array bits). */
export function allocHost(d: DType, n: number): HostArray {
  const bytes = d === 'int4' || d === 'uint4' ? Math.ceil(n / 2) : (n * DTYPE_BITS[d]) / 8;
  return hostArrayOn(d, new ArrayBuffer(bytes));
}

/** The host array of dtype `d` over `buffer` (float16/bfloat16 as raw Uint16Array bits, 4-bit as packed bytes). */
export function hostArrayOn(d: DType, buffer: ArrayBuffer): HostArray {
  switch (d) {
    case 'float32':
      return new Float32Array(buffer);
    case 'float64':
      return new Float64Array(buffer);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(buffer);
    case 'int64':
      return new BigInt64Array(buffer);
    case 'int32':
      return new Int32Array(buffer);
    case 'bool':
    case 'uint8':
    case 'int4':
    case 'uint4':
      return new Uint8Array(buffer);
  }
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 bits → float16 bits, round to nearest even. */
export function float32BitsToFloat16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {
    // Inf stays Inf; NaN becomes a quiet NaN that keeps the top of its payload.
    return abs > 0x7f800000 ? sign | 0x7e00 | ((abs >>> 13) & 0x3ff) : sign | 0x7c00;
  }
  // 65520 = 65504 + half an ulp: it and everything above round to Inf.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    // Below the smallest normal half (2^-14): the result is a subnormal m·2^-24 (m may round up to 1024,
    // which is exactly the smallest normal's bit pattern). The product is exact in float64.
    scratchU32[0] = abs;
    const v = scratchF32[0]! * 16777216;
    let m = Math.floor(v);
    const frac = v - m;
    if (frac > 0.5 || (frac === 0.5 && (m & 1) === 1)) m++;
    return sign | m;
  }
  const exp = (abs >>> 23) - 127 + 15;
  const mant = abs & 0x7fffff;
  let h = (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent.
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

/** A number (rounded to float32 first) to IEEE half-precision bits, round to nearest even. */
export function float32ToFloat16Bits(value: number): number {
  scratchF32[0] = value;
  return float32BitsToFloat16Bits(scratchU32[0]!);
}
