/**
 * A layout helper: the same int4 weight in the layout of ONNX DequantizeLinear-21 in blocked mode (axis = 1 on
 * [N, K]), for graphs that want W dequantized as a plain tensor by a standard ONNX op, e.g. an exported model
 * for another runtime, and for the tests that pin the int4 layout against onnxruntime. moka's own graphs do not
 * use it: the forward runs MatMulNBits and the backward (dX = dY · W) decodes the packed codes itself with
 * BitShift/BitwiseAnd and the block scales (quantized-linear.ts).
 *
 * How it differs from MatMulNBits (quantization-formats.md §3):
 * - x is the whole [N, K] tensor packed flat, two elements per byte, the first in the LOW nibble, with no
 *   per-row or per-block padding (MatMulNBits pads each row to whole blocks);
 * - scale has x's shape except along the axis: [N, ceil(K / blockSize)];
 * - the zero point defaults to 0, not 8. A symmetric weight therefore becomes INT4 (q − 8, two's complement,
 *   type 22) with no zero point; an asymmetric one UINT4 (type 21) with its zero points, packed flat like x.
 */
import { INT4_DEFAULT_ZERO_POINT, int4CodeAt, int4KBlocks, int4ZeroPoint, type Int4Weight } from './int4.ts';

/** ONNX TensorProto data types (onnx-proto 8.0.1 lacks the enum names; ORT accepts the numbers). */
export const ONNX_UINT4 = 21;
export const ONNX_INT4 = 22;

export interface DequantizeLinearInt4 {
  /** 22 (INT4) for symmetric weights, 21 (UINT4) for asymmetric ones. */
  dataType: typeof ONNX_INT4 | typeof ONNX_UINT4;
  /** [N, K]. */
  dims: [number, number];
  /** ceil(N·K / 2) bytes. */
  data: Uint8Array;
  axis: 1;
  blockSize: number;
  /** [N, kBlocks] float32. */
  scale: Float32Array;
  scaleDims: [number, number];
  /** Same type as x, [N, kBlocks] packed flat; null when the default 0 applies (symmetric). */
  zeroPoint: Uint8Array | null;
}

/** Packs 4-bit values (0..15) two per byte, the first in the low nibble; an odd count pads with 0. */
function packLowFirst(count: number, valueAt: (i: number) => number): Uint8Array {
  const out = new Uint8Array(Math.ceil(count / 2));
  for (let i = 0; i < count; i++) out[i >> 1]! |= (valueAt(i) & 0x0f) << ((i & 1) * 4);
  return out;
}

export function toDequantizeLinearInt4(w: Int4Weight): DequantizeLinearInt4 {
  const { n, k, blockSize } = w;
  const kBlocks = int4KBlocks(k, blockSize);
  // INT4 nibble of q − 8 in two's complement is q ^ 0b1000.
  const shift = w.symmetric ? INT4_DEFAULT_ZERO_POINT : 0;
  const data = packLowFirst(n * k, (i) => int4CodeAt(w, Math.floor(i / k), i % k) ^ shift);
  const zeroPoint = w.symmetric
    ? null
    : packLowFirst(n * kBlocks, (i) => int4ZeroPoint(w, Math.floor(i / kBlocks), i % kBlocks));
  return {
    dataType: w.symmetric ? ONNX_INT4 : ONNX_UINT4,
    dims: [n, k],
    data,
    axis: 1,
    blockSize,
    scale: w.scales.slice(),
    scaleDims: [n, kBlocks],
    zeroPoint,
  };
}
