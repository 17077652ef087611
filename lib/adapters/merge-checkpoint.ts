/**
 * `moka merge`: base model + adapter → a full-precision Hugging Face checkpoint with ΔW added to each adapted
 * projection. A 4-bit base is dequantized first, so the merged weights are the ones training actually saw
 * (W_deq + ΔW, standard QLoRA practice). Tensors are read, merged and written one at a time.
 */
import { existsSync, readdirSync } from 'node:fs';
import { UserError } from '../errors.ts';
import { writeCheckpoint, type CheckpointTensorInput } from '../model/checkpoint.ts';
import { openFrozenBase } from '../quant/frozen-base.ts';
import { loadAdapterFor } from './adapted-model.ts';
import { mergeWeight } from './merge.ts';

export type MergeDtype = 'F32' | 'F16' | 'BF16';

export interface MergeOptions {
  model: string;
  adapter: string;
  out: string;
  /** Output dtype (default F32). */
  dtype?: MergeDtype;
  /** Replace a non-empty output directory. */
  force?: boolean;
}

export interface MergeResult {
  out: string;
  mergedModules: number;
  tensors: number;
}

export async function mergeCheckpoint(opts: MergeOptions): Promise<MergeResult> {
  if (existsSync(opts.out) && readdirSync(opts.out).length > 0 && !opts.force) {
    throw new UserError(`${opts.out} is not empty; choose another --out or pass --force to replace it`);
  }
  const base = await openFrozenBase(opts.model);
  try {
    const { runtime, values } = await loadAdapterFor(base, opts.adapter);
    const dtype = opts.dtype ?? 'F32';
    const adapted = new Set(runtime.modules.map((m) => `${m}.weight`));
    const tensors = new Map<string, CheckpointTensorInput>();
    for (const name of base.tensorNames()) {
      tensors.set(name, {
        dtype,
        shape: base.tensorShape(name),
        data: async () => {
          const w = await base.readWeight(name);
          return adapted.has(name) ? mergeWeight(runtime, name.slice(0, -'.weight'.length), w, values) : w;
        },
      });
    }
    const config = { ...base.config.raw };
    delete config.quantization_config;
    config.torch_dtype = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype];
    const ckpt = base.checkpoint;
    await writeCheckpoint(opts.out, {
      config,
      tensors,
      shardSizeBytes: 5e9,
      tokenizerJson: ckpt.tokenizerJson ?? undefined,
      tokenizerConfig: ckpt.tokenizerConfig ?? undefined,
      generationConfig: ckpt.generationConfig ?? undefined,
    });
    return { out: opts.out, mergedModules: adapted.size, tensors: tensors.size };
  } finally {
    await base.close();
  }
}
