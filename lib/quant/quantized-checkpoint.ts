/**
 * Reading a 4-bit checkpoint directory (written by `moka quantize`, or a transformers/bitsandbytes NF4 model):
 * the same directory layout as a plain HF checkpoint, with `quantization_config` in config.json and each
 * quantized Linear weight stored as packed bytes plus companion tensors (bnb-serialization.ts,
 * int4-serialization.ts).
 *
 * Opening validates the directory as a LLaMA of its config, seeing each quantized weight with the logical shape
 * and dtype its quant state records, so a mismatched or incomplete quantized model fails at once, naming the
 * tensor. Weights are read on demand: `readQuantized` (the packed form, e.g. for MatMulNBits) or `readFloat32`
 * (dequantized, or the stored values of a tensor left in 16 bits).
 */
import { UserError } from '../errors.ts';
import { openCheckpoint, validateLlamaTensors, type Checkpoint } from '../model/checkpoint.ts';
import type { LlamaConfig } from '../model/config.ts';
import type { SafetensorsDtype } from '../model/dtype-convert.ts';
import {
  BNB_FP4_STATE_SUFFIX,
  BNB_NF4_STATE_SUFFIX,
  isBnbCompanionTensor,
  nf4FromTensors,
  parseNf4QuantState,
} from './bnb-serialization.ts';
import {
  INT4_STATE_SUFFIX,
  int4FromTensors,
  isInt4CompanionTensor,
  parseInt4QuantState,
} from './int4-serialization.ts';
import type { TensorSource } from './quant-tensor.ts';
import { dequantizeToFloat32, type QuantFormat, type QuantizedWeight } from './quantized-weight.ts';

/**
 * Which 4-bit format a config.json's `quantization_config` describes: null when there is none. Formats moka
 * cannot read (FP4, 8-bit, GPTQ, AWQ, …) are a UserError that says so.
 */
export function quantFormatOf(configRaw: Record<string, unknown>, where: string): QuantFormat | null {
  const qc = configRaw.quantization_config;
  if (qc === undefined || qc === null) return null;
  if (typeof qc !== 'object' || Array.isArray(qc)) {
    throw new UserError(`${where}: "quantization_config" is not an object; fix or remove it`);
  }
  const q = qc as Record<string, unknown>;
  if (q.quant_method === 'bitsandbytes') {
    if (q.load_in_4bit !== true) {
      throw new UserError(
        `${where}: this is a bitsandbytes 8-bit model; moka reads 4-bit NF4 only. Start from the original weights.`,
      );
    }
    if (q.bnb_4bit_quant_type !== 'nf4') {
      throw new UserError(
        `${where}: bnb_4bit_quant_type is ${JSON.stringify(q.bnb_4bit_quant_type)}; moka reads NF4 only. ` +
          'Re-quantize the original model with `moka quantize --format nf4`.',
      );
    }
    return 'nf4';
  }
  if (q.quant_method === 'moka' && q.quant_type === 'int4') return 'int4';
  throw new UserError(
    `${where}: quantization method ${JSON.stringify(q.quant_method)} is not supported; moka reads bitsandbytes NF4 ` +
      'and its own int4 checkpoints. Start from the original 16-bit weights.',
  );
}

export interface QuantizedTensorInfo {
  name: string;
  /** For a quantized weight: the dtype it had before quantization (its quant state's `dtype`). */
  dtype: SafetensorsDtype;
  /** The logical shape ([out, in] for a quantized weight, not the packed shape). */
  shape: number[];
  quantized: boolean;
}

export class QuantizedCheckpoint {
  constructor(
    readonly checkpoint: Checkpoint,
    readonly format: QuantFormat,
    private readonly tensors: ReadonlyMap<string, QuantizedTensorInfo>,
  ) {}

  get dir(): string {
    return this.checkpoint.dir;
  }

  get config(): LlamaConfig {
    return this.checkpoint.config;
  }

  /** Logical tensor names, in file order: the names an unquantized checkpoint would have. */
  tensorNames(): string[] {
    return [...this.tensors.keys()];
  }

  quantizedWeightNames(): string[] {
    return [...this.tensors.values()].filter((t) => t.quantized).map((t) => t.name);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): QuantizedTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new UserError(`${this.dir}: the checkpoint has no tensor "${name}"`);
    return t;
  }

  isQuantized(name: string): boolean {
    return this.info(name).quantized;
  }

  /** The packed weight with its scales, ready for the format's kernels. */
  async readQuantized(name: string): Promise<QuantizedWeight> {
    if (!this.isQuantized(name)) throw new UserError(`${this.dir}: tensor "${name}" is not quantized`);
    const source = checkpointSource(this.checkpoint);
    return this.format === 'nf4'
      ? nf4FromTensors(name, source, this.dir)
      : int4FromTensors(name, source, this.dir);
  }

  /** float32 values: dequantized for quantized weights, converted from the stored dtype otherwise. */
  async readFloat32(name: string): Promise<Float32Array> {
    if (this.isQuantized(name)) return dequantizeToFloat32(await this.readQuantized(name));
    return this.checkpoint.readFloat32(name);
  }

  /** The stored bytes of a tensor that is not quantized. */
  readRaw(name: string): Promise<Uint8Array> {
    if (this.isQuantized(name))
      throw new UserError(`${this.dir}: tensor "${name}" is quantized; use readQuantized`);
    return this.checkpoint.readRaw(name);
  }

  close(): Promise<void> {
    return this.checkpoint.close();
  }
}

/** Looks tensors up in an open checkpoint, reading their bytes on demand. */
export function checkpointSource(ckpt: Checkpoint): TensorSource {
  return async (name) => {
    if (!ckpt.has(name)) return null;
    const { dtype, shape } = ckpt.info(name);
    return { name, dtype, shape, bytes: await ckpt.readRaw(name) };
  };
}

export async function openQuantizedCheckpoint(dir: string): Promise<QuantizedCheckpoint> {
  const ckpt = await openCheckpoint(dir, { validate: false });
  try {
    const format = quantFormatOf(ckpt.config.raw, `${dir}/config.json`);
    if (format === null) {
      throw new UserError(
        `${dir}: config.json has no quantization_config, so this is not a quantized model; ` +
          'quantize it with `moka quantize` first (or use it directly as a 16-bit model)',
      );
    }
    const stateSuffix = format === 'nf4' ? BNB_NF4_STATE_SUFFIX : INT4_STATE_SUFFIX;
    const isCompanion = format === 'nf4' ? isBnbCompanionTensor : isInt4CompanionTensor;
    const names = ckpt.tensorNames();
    if (format === 'nf4') {
      const fp4 = names.find((n) => n.endsWith(BNB_FP4_STATE_SUFFIX));
      if (fp4) {
        throw new UserError(
          `${dir}: "${fp4.slice(0, -BNB_FP4_STATE_SUFFIX.length)}" is FP4-quantized; moka reads NF4 only`,
        );
      }
    }
    const quantized = new Map<string, QuantizedTensorInfo>();
    for (const n of names) {
      if (!n.endsWith(stateSuffix)) continue;
      const weight = n.slice(0, -stateSuffix.length);
      const bytes = await ckpt.readRaw(n);
      const state =
        format === 'nf4' ? parseNf4QuantState(bytes, weight, dir) : parseInt4QuantState(bytes, weight, dir);
      if (!ckpt.has(weight)) {
        throw new UserError(
          `${dir}: "${n}" describes weight "${weight}", which the checkpoint does not have`,
        );
      }
      quantized.set(weight, { name: weight, dtype: state.dtype, shape: [...state.shape], quantized: true });
    }
    if (quantized.size === 0) {
      throw new UserError(
        `${dir}: config.json declares ${format} quantization but no tensor has a "…${stateSuffix}" quant state; ` +
          'the checkpoint is incomplete or mislabelled. Re-create it with `moka quantize`.',
      );
    }
    const tensors = new Map<string, QuantizedTensorInfo>();
    for (const n of names) {
      if (isCompanion(n)) continue;
      const q = quantized.get(n);
      if (q) {
        tensors.set(n, q);
      } else {
        const { dtype, shape } = ckpt.info(n);
        tensors.set(n, { name: n, dtype, shape, quantized: false });
      }
    }
    validateLlamaTensors(ckpt.config, tensors, dir);
    return new QuantizedCheckpoint(ckpt, format, tensors);
  } catch (err) {
    await ckpt.close();
    throw err;
  }
}
