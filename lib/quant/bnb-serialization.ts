/**
 * NF4 weights in the Hugging Face transformers + bitsandbytes 4-bit checkpoint layout, as written by
 * `Linear4bit._save_to_state_dict` / `QuantState.as_dict(packed=True)` (quantization-formats.md §2):
 *
 * | tensor                                     | dtype | shape                        |
 * |--------------------------------------------|-------|------------------------------|
 * | `<w>` (e.g. `…q_proj.weight`)              | U8    | [ceil(numel/2), 1]           |
 * | `<w>.absmax`                               | F32, or U8 when double quantized | [blocks] |
 * | `<w>.quant_map`                            | F32   | [16]                         |
 * | `<w>.nested_absmax` (double quant only)    | F32   | [ceil(blocks/256)]           |
 * | `<w>.nested_quant_map` (double quant only) | F32   | [256]                        |
 * | `<w>.quant_state.bitsandbytes__nf4`        | U8    | [json bytes]                 |
 *
 * The quant state JSON holds quant_type, blocksize, dtype, shape and, with double quant, nested_blocksize,
 * nested_dtype and nested_offset, in that key order. config.json gets the `quantization_config` block of
 * `bnbQuantizationConfig`.
 */
import { UserError } from '../errors.ts';
import { torchDtypeName } from '../model/dtype-convert.ts';
import { restoreAbsmax, type DoubleQuantState } from './double-quant.ts';
import { BNB_BLOCK_SIZES, sourceDtypeFromTorchName, type Nf4Weight, type SourceDtype } from './nf4.ts';
import { PyFloat, pythonJsonDumps, type PyJsonValue } from './python-json.ts';
import type { QuantTensor, TensorSource } from './quant-tensor.ts';
import { parseQuantStateJson } from './quant-tensor.ts';

export const BNB_NF4_STATE_SUFFIX = '.quant_state.bitsandbytes__nf4';
export const BNB_FP4_STATE_SUFFIX = '.quant_state.bitsandbytes__fp4';

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/** The quant-state JSON text bnb writes for this weight. */
export function nf4QuantStateJson(w: Nf4Weight): string {
  const entries: [string, PyJsonValue][] = [
    ['quant_type', 'nf4'],
    ['blocksize', w.blockSize],
    ['dtype', torchDtypeName(w.dtype)],
    ['shape', w.shape],
  ];
  if (w.doubleQuant) {
    entries.push(
      ['nested_blocksize', w.doubleQuant.nestedBlockSize],
      ['nested_dtype', 'float32'],
      ['nested_offset', new PyFloat(w.doubleQuant.offset)],
    );
  }
  return pythonJsonDumps(entries);
}

/** The checkpoint tensors of one NF4 weight named `weightName` (e.g. `model.layers.0.self_attn.q_proj.weight`). */
export function nf4ToTensors(weightName: string, w: Nf4Weight): QuantTensor[] {
  const out: QuantTensor[] = [
    { name: weightName, dtype: 'U8', shape: [w.packed.length, 1], bytes: w.packed },
  ];
  if (w.doubleQuant) {
    const dq = w.doubleQuant;
    out.push(
      { name: `${weightName}.absmax`, dtype: 'U8', shape: [dq.codes.length], bytes: dq.codes },
      {
        name: `${weightName}.quant_map`,
        dtype: 'F32',
        shape: [w.quantMap.length],
        bytes: f32Bytes(w.quantMap),
      },
      {
        name: `${weightName}.nested_absmax`,
        dtype: 'F32',
        shape: [dq.nestedAbsmax.length],
        bytes: f32Bytes(dq.nestedAbsmax),
      },
      {
        name: `${weightName}.nested_quant_map`,
        dtype: 'F32',
        shape: [dq.nestedQuantMap.length],
        bytes: f32Bytes(dq.nestedQuantMap),
      },
    );
  } else {
    out.push(
      { name: `${weightName}.absmax`, dtype: 'F32', shape: [w.absmax.length], bytes: f32Bytes(w.absmax) },
      {
        name: `${weightName}.quant_map`,
        dtype: 'F32',
        shape: [w.quantMap.length],
        bytes: f32Bytes(w.quantMap),
      },
    );
  }
  const state = new TextEncoder().encode(nf4QuantStateJson(w));
  out.push({
    name: `${weightName}${BNB_NF4_STATE_SUFFIX}`,
    dtype: 'U8',
    shape: [state.length],
    bytes: state,
  });
  return out;
}

/** True when `name` is one of the companion tensors of a bnb 4-bit weight (not a weight of its own). */
export function isBnbCompanionTensor(name: string): boolean {
  return /\.weight\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\.bitsandbytes__(nf4|fp4))$/.test(
    name,
  );
}

function asFloat32(bytes: Uint8Array): Float32Array {
  const copy = bytes.slice();
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
}

/** The non-tensor part of a bnb quant state (the `quant_state.bitsandbytes__nf4` JSON), validated. */
export interface Nf4QuantState {
  blockSize: number;
  dtype: SourceDtype;
  shape: number[];
  numel: number;
  /** Present with double quantization. */
  nested: { blockSize: number; offset: number } | null;
}

function nf4Failure(weightName: string, where: string) {
  return (what: string): never => {
    throw new UserError(
      `${where}: NF4 weight "${weightName}": ${what}. The checkpoint is corrupt or not a bitsandbytes 4-bit ` +
        'checkpoint; re-create it with `moka quantize`.',
    );
  };
}

/** Parses and validates the quant-state JSON bytes of `weightName`; a UserError names what is wrong. */
export function parseNf4QuantState(bytes: Uint8Array, weightName: string, where: string): Nf4QuantState {
  const fail = nf4Failure(weightName, where);
  const state = parseQuantStateJson(bytes, fail);
  if (state.quant_type !== 'nf4')
    fail(`quant_state.quant_type is ${JSON.stringify(state.quant_type)}, not "nf4"`);
  const blockSize = state.blocksize;
  if (typeof blockSize !== 'number' || !(BNB_BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    return fail(
      `quant_state.blocksize ${JSON.stringify(blockSize)} is not one of ${BNB_BLOCK_SIZES.join(', ')}`,
    );
  }
  const dtype = sourceDtypeFromTorchName(state.dtype);
  if (!dtype)
    return fail(`quant_state.dtype ${JSON.stringify(state.dtype)} is not float32, float16 or bfloat16`);
  const shape = state.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    return fail(`quant_state.shape ${JSON.stringify(shape)} is not a list of sizes`);
  }
  let nested: Nf4QuantState['nested'] = null;
  if ('nested_offset' in state || 'nested_blocksize' in state) {
    const nestedBlockSize = state.nested_blocksize;
    if (
      typeof nestedBlockSize !== 'number' ||
      !Number.isSafeInteger(nestedBlockSize) ||
      nestedBlockSize <= 0
    ) {
      return fail(
        `quant_state.nested_blocksize ${JSON.stringify(nestedBlockSize)} is not a positive integer`,
      );
    }
    if (state.nested_dtype !== undefined && state.nested_dtype !== 'float32') {
      fail(`quant_state.nested_dtype ${JSON.stringify(state.nested_dtype)} is not "float32"`);
    }
    const offset = Number(state.nested_offset);
    if (typeof state.nested_offset !== 'number' || !Number.isFinite(offset)) {
      fail(`quant_state.nested_offset ${JSON.stringify(state.nested_offset)} is not a number`);
    }
    nested = { blockSize: nestedBlockSize, offset: Math.fround(offset) };
  }
  const dims = [...(shape as number[])];
  return { blockSize, dtype, shape: dims, numel: dims.reduce((a, d) => a * d, 1), nested };
}

/**
 * Reads one NF4 weight back from its checkpoint tensors. `source` looks tensors up by name; `where` names the
 * checkpoint in errors. Every inconsistency (missing companion, wrong size, unknown key) is a UserError, since
 * it means the checkpoint is corrupt or from an incompatible writer.
 */
export async function nf4FromTensors(
  weightName: string,
  source: TensorSource,
  where: string,
): Promise<Nf4Weight> {
  const fail = nf4Failure(weightName, where);
  const need = async (suffix: string) =>
    (await source(`${weightName}${suffix}`)) ?? fail(`missing tensor "${weightName}${suffix}"`);
  if (await source(`${weightName}${BNB_FP4_STATE_SUFFIX}`)) {
    throw new UserError(
      `${where}: "${weightName}" is FP4-quantized; moka reads NF4 only. Quantize the original model with ` +
        '`moka quantize --format nf4`.',
    );
  }
  const state = parseNf4QuantState((await need(BNB_NF4_STATE_SUFFIX)).bytes, weightName, where);
  const { shape, numel, blockSize } = state;
  const blocks = Math.ceil(numel / blockSize);

  const weight = await need('');
  // quant_storage may reinterpret the bytes as another dtype (FSDP); the bytes are the packed codes either way.
  if (weight.bytes.length !== Math.ceil(numel / 2)) {
    fail(
      `holds ${weight.bytes.length} bytes of codes, but shape ${JSON.stringify(shape)} needs ${Math.ceil(numel / 2)}`,
    );
  }
  const quantMapT = await need('.quant_map');
  if (quantMapT.dtype !== 'F32' || quantMapT.bytes.length !== 64) fail('quant_map is not 16 float32 values');
  const absmaxT = await need('.absmax');
  let absmax: Float32Array;
  let doubleQuant: DoubleQuantState | null = null;
  if (state.nested) {
    if (absmaxT.dtype !== 'U8' || absmaxT.bytes.length !== blocks) {
      fail(
        `double-quantized absmax must be ${blocks} uint8 codes, got ${absmaxT.dtype} × ${absmaxT.bytes.length}`,
      );
    }
    const nestedBlocks = Math.ceil(blocks / state.nested.blockSize);
    const nestedT = await need('.nested_absmax');
    if (nestedT.dtype !== 'F32' || nestedT.bytes.length !== nestedBlocks * 4) {
      fail(`nested_absmax must be ${nestedBlocks} float32 values`);
    }
    const mapT = await need('.nested_quant_map');
    if (mapT.dtype !== 'F32' || mapT.bytes.length !== 256 * 4)
      fail('nested_quant_map is not 256 float32 values');
    doubleQuant = {
      codes: absmaxT.bytes.slice(),
      nestedAbsmax: asFloat32(nestedT.bytes),
      nestedBlockSize: state.nested.blockSize,
      nestedQuantMap: asFloat32(mapT.bytes),
      offset: state.nested.offset,
    };
    absmax = restoreAbsmax(doubleQuant);
  } else {
    if (await source(`${weightName}.nested_absmax`))
      fail('has nested_absmax but its quant_state has no nested_* keys');
    if (absmaxT.dtype !== 'F32' || absmaxT.bytes.length !== blocks * 4) {
      fail(`absmax must be ${blocks} float32 values, got ${absmaxT.dtype} × ${absmaxT.bytes.length} bytes`);
    }
    absmax = asFloat32(absmaxT.bytes);
  }
  return {
    format: 'nf4',
    shape,
    numel,
    blockSize,
    packed: weight.bytes.slice(),
    absmax,
    quantMap: asFloat32(quantMapT.bytes),
    doubleQuant,
    dtype: state.dtype,
  };
}

export interface BnbConfigOptions {
  doubleQuant: boolean;
  /** The dtype transformers should compute in (`bnb_4bit_compute_dtype`); usually the model's own. */
  computeDtype: SourceDtype;
  /**
   * Modules left in 16 bits, or null for transformers' default (it keeps lm_head unquantized). Pass [] when
   * lm_head is quantized too, so transformers converts it to Linear4bit on load.
   */
  skipModules: string[] | null;
}

/** The `quantization_config` block of config.json, as `BitsAndBytesConfig.to_dict()` writes it (keys sorted). */
export function bnbQuantizationConfig(opts: BnbConfigOptions): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: torchDtypeName(opts.computeDtype),
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: 'nf4',
    bnb_4bit_use_double_quant: opts.doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: opts.skipModules,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: 'bitsandbytes',
  };
}
