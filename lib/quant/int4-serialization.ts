/**
 * int4 (MatMulNBits layout) weights in a safetensors checkpoint. There is no Hugging Face standard for this
 * layout, so moka stores it the way bitsandbytes stores NF4: the packed weight under the weight's own name,
 * companions beside it, and a JSON quant state as uint8 bytes, so a reader needs nothing but the tensors:
 *
 * | tensor                              | dtype | shape                    |
 * |-------------------------------------|-------|--------------------------|
 * | `<w>`                               | U8    | [N, kBlocks, blockSize/2] (MatMulNBits input B) |
 * | `<w>.scales`                        | F32   | [N, kBlocks]             |
 * | `<w>.zero_points` (asymmetric only) | U8    | [N, ceil(kBlocks/2)]     |
 * | `<w>.quant_state.moka__int4`        | U8    | JSON: quant_type, bits, block_size, symmetric, dtype, shape, layout |
 *
 * config.json carries `quantization_config` = `int4QuantizationConfig(...)` (quant_method "moka").
 */
import { UserError } from '../errors.ts';
import { torchDtypeName } from '../model/dtype-convert.ts';
import { INT4_BLOCK_SIZES, int4KBlocks, type Int4Weight } from './int4.ts';
import { sourceDtypeFromTorchName, type SourceDtype } from './nf4.ts';
import { pythonJsonDumps } from './python-json.ts';
import type { QuantTensor, TensorSource } from './quant-tensor.ts';
import { parseQuantStateJson } from './quant-tensor.ts';

export const INT4_STATE_SUFFIX = '.quant_state.moka__int4';
/** Names the byte layout, so a future layout cannot be misread as this one. */
export const INT4_LAYOUT = 'com.microsoft.MatMulNBits';

export function int4ToTensors(weightName: string, w: Int4Weight): QuantTensor[] {
  const kBlocks = int4KBlocks(w.k, w.blockSize);
  const scales = w.scales;
  const out: QuantTensor[] = [
    { name: weightName, dtype: 'U8', shape: [w.n, kBlocks, w.blockSize / 2], bytes: w.packed },
    {
      name: `${weightName}.scales`,
      dtype: 'F32',
      shape: [w.n, kBlocks],
      bytes: new Uint8Array(scales.buffer.slice(scales.byteOffset, scales.byteOffset + scales.byteLength)),
    },
  ];
  if (w.zeroPoints) {
    out.push({
      name: `${weightName}.zero_points`,
      dtype: 'U8',
      shape: [w.n, Math.ceil(kBlocks / 2)],
      bytes: w.zeroPoints,
    });
  }
  const state = pythonJsonDumps([
    ['quant_type', 'int4'],
    ['bits', 4],
    ['block_size', w.blockSize],
    ['symmetric', w.symmetric],
    ['dtype', torchDtypeName(w.dtype)],
    ['shape', [w.n, w.k]],
    ['layout', INT4_LAYOUT],
  ]);
  const bytes = new TextEncoder().encode(state);
  out.push({ name: `${weightName}${INT4_STATE_SUFFIX}`, dtype: 'U8', shape: [bytes.length], bytes });
  return out;
}

export function isInt4CompanionTensor(name: string): boolean {
  return /\.weight\.(scales|zero_points|quant_state\.moka__int4)$/.test(name);
}

/** The JSON part of an int4 quant state, validated. */
export interface Int4QuantState {
  blockSize: number;
  symmetric: boolean;
  dtype: SourceDtype;
  /** [N, K]. */
  shape: [number, number];
}

function int4Failure(weightName: string, where: string) {
  return (what: string): never => {
    throw new UserError(
      `${where}: int4 weight "${weightName}": ${what}. The checkpoint is corrupt or from another writer; ` +
        're-create it with `moka quantize --format int4`.',
    );
  };
}

export function parseInt4QuantState(bytes: Uint8Array, weightName: string, where: string): Int4QuantState {
  const fail = int4Failure(weightName, where);
  const state = parseQuantStateJson(bytes, fail);
  if (state.quant_type !== 'int4' || state.bits !== 4) fail('quant_state is not a 4-bit int4 state');
  if (state.layout !== INT4_LAYOUT)
    fail(`quant_state.layout ${JSON.stringify(state.layout)} is not "${INT4_LAYOUT}"`);
  const blockSize = state.block_size;
  if (typeof blockSize !== 'number' || !(INT4_BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    return fail(
      `quant_state.block_size ${JSON.stringify(blockSize)} is not one of ${INT4_BLOCK_SIZES.join(', ')}`,
    );
  }
  if (typeof state.symmetric !== 'boolean') return fail('quant_state.symmetric is not a boolean');
  const dtype = sourceDtypeFromTorchName(state.dtype);
  if (!dtype)
    return fail(`quant_state.dtype ${JSON.stringify(state.dtype)} is not float32, float16 or bfloat16`);
  const shape = state.shape;
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    return fail(`quant_state.shape ${JSON.stringify(shape)} is not [out, in]`);
  }
  return { blockSize, symmetric: state.symmetric, dtype, shape: [shape[0] as number, shape[1] as number] };
}

export async function int4FromTensors(
  weightName: string,
  source: TensorSource,
  where: string,
): Promise<Int4Weight> {
  const fail = int4Failure(weightName, where);
  const need = async (suffix: string) =>
    (await source(`${weightName}${suffix}`)) ?? fail(`missing tensor "${weightName}${suffix}"`);
  const { blockSize, symmetric, dtype, shape } = parseInt4QuantState(
    (await need(INT4_STATE_SUFFIX)).bytes,
    weightName,
    where,
  );
  const [n, k] = shape;
  const kBlocks = int4KBlocks(k, blockSize);
  const packedT = await need('');
  if (packedT.dtype !== 'U8' || packedT.bytes.length !== n * kBlocks * (blockSize / 2)) {
    fail(
      `packed weight must be ${n * kBlocks * (blockSize / 2)} uint8 bytes ([${n}, ${kBlocks}, ${blockSize / 2}])`,
    );
  }
  const scalesT = await need('.scales');
  if (scalesT.dtype !== 'F32' || scalesT.bytes.length !== n * kBlocks * 4)
    fail(`scales must be ${n * kBlocks} float32`);
  let zeroPoints: Uint8Array | null = null;
  const zpT = await source(`${weightName}.zero_points`);
  if (symmetric && zpT) fail('a symmetric weight has no zero points, but the checkpoint has some');
  if (!symmetric) {
    if (!zpT) return fail(`missing tensor "${weightName}.zero_points"`);
    if (zpT.dtype !== 'U8' || zpT.bytes.length !== n * Math.ceil(kBlocks / 2)) {
      fail(`zero_points must be ${n * Math.ceil(kBlocks / 2)} uint8 bytes`);
    }
    zeroPoints = zpT.bytes.slice();
  }
  const scalesCopy = scalesT.bytes.slice();
  return {
    format: 'int4',
    n,
    k,
    blockSize,
    symmetric,
    packed: packedT.bytes.slice(),
    scales: new Float32Array(scalesCopy.buffer, 0, n * kBlocks),
    zeroPoints,
    dtype,
  };
}

export interface Int4ConfigOptions {
  blockSize: number;
  symmetric: boolean;
  computeDtype: SourceDtype;
  /** Linear modules left in 16 bits (lm_head unless it was quantized). */
  modulesNotConverted: string[];
}

/** The `quantization_config` block of a moka int4 checkpoint's config.json. */
export function int4QuantizationConfig(opts: Int4ConfigOptions): Record<string, unknown> {
  return {
    quant_method: 'moka',
    quant_type: 'int4',
    bits: 4,
    block_size: opts.blockSize,
    symmetric: opts.symmetric,
    layout: INT4_LAYOUT,
    compute_dtype: torchDtypeName(opts.computeDtype),
    modules_not_converted: opts.modulesNotConverted,
  };
}
