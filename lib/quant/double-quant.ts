/**
 * Double quantization of NF4 block scales (QLoRA §3, bnb `compress_statistics=True`): the float32 absmax of every
 * 64-value block is itself stored in 8 bits.
 *
 * offset = mean(absmax) (absmax values are all ≥ 0, so subtracting the mean centres them); the centred values
 * are blockwise-quantized in blocks of 256 with the signed dynamic map (dynamic-map.ts), keeping one float32
 * absmax per 256 blocks. Recovery, in float32 as bnb does it: absmax[j] = map[q[j]] · nested[j / 256] + offset.
 * Cost: 8/64 + 32/(64·256) ≈ 0.127 bits per weight instead of 0.5.
 */
import { blockAbsmax, blockReciprocal } from './blockwise.ts';
import { defaultDynamicMap, dynamicCode } from './dynamic-map.ts';

/** bnb always uses 256 for the second level (`quantize_blockwise(absmax - offset, blocksize=256)`). */
export const NESTED_BLOCK_SIZE = 256;

export interface DoubleQuantState {
  /** One uint8 code per first-level block (the checkpoint's `.absmax`, dtype U8). */
  codes: Uint8Array;
  /** One float32 per group of `nestedBlockSize` codes (`.nested_absmax`). */
  nestedAbsmax: Float32Array;
  nestedBlockSize: number;
  /** The 256-entry table the codes index (`.nested_quant_map`). */
  nestedQuantMap: Float32Array;
  /** The mean that was subtracted, a float32 value (`nested_offset` in the quant state JSON). */
  offset: number;
}

/**
 * mean(absmax) as a float32. torch's reduction order (and so its last bit) differs across devices; we sum in
 * float64, which is at least as accurate as any of them. The value is stored in the checkpoint, so readers never
 * recompute it.
 */
function meanFloat32(values: Float32Array): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]!;
  return Math.fround(values.length === 0 ? 0 : s / values.length);
}

export function doubleQuantizeAbsmax(absmax: Float32Array): DoubleQuantState {
  const offset = meanFloat32(absmax);
  const centred = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) centred[i] = absmax[i]! - offset;
  const nestedAbsmax = blockAbsmax(centred, NESTED_BLOCK_SIZE);
  const map = defaultDynamicMap();
  const codes = new Uint8Array(absmax.length);
  for (let b = 0; b < nestedAbsmax.length; b++) {
    const inv = blockReciprocal(nestedAbsmax[b]!);
    const end = Math.min(centred.length, (b + 1) * NESTED_BLOCK_SIZE);
    for (let i = b * NESTED_BLOCK_SIZE; i < end; i++)
      codes[i] = dynamicCode(map, Math.fround(centred[i]! * inv));
  }
  return { codes, nestedAbsmax, nestedBlockSize: NESTED_BLOCK_SIZE, nestedQuantMap: map, offset };
}

/** The float32 absmax values dequantization uses: map[q] · nested[block] rounded to float32, then + offset. */
export function restoreAbsmax(state: DoubleQuantState): Float32Array {
  const { codes, nestedAbsmax, nestedBlockSize, nestedQuantMap, offset } = state;
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    const scaled = Math.fround(nestedQuantMap[codes[i]!]! * nestedAbsmax[Math.floor(i / nestedBlockSize)]!);
    out[i] = scaled + offset;
  }
  return out;
}
