/**
 * `moka merge`: base model + adapter → a full-precision Hugging Face checkpoint with ΔW added to each adapted
 * projection. A 4-bit base is dequantized first, so the merged weights are the ones training actually saw
 * (W_deq + ΔW, standard QLoRA practice). Tensors are read, merged and written one at a time, into
 * `<out>.tmp-<pid>`, which is renamed into place only when complete (atomic-output-dir.ts).
 */
import { resolve } from 'node:path';
import { UserError } from '../errors.ts';
import { writeCheckpoint, type CheckpointTensorInput } from '../model/checkpoint.ts';
import { torchDtypeName } from '../model/dtype-convert.ts';
import { beginAtomicOutputDir, type AtomicOutputDir } from '../quant/atomic-output-dir.ts';
import { openFrozenBase } from '../quant/frozen-base.ts';
import { DEFAULT_MAX_SHARD_BYTES } from '../quant/quantize-checkpoint.ts';
import { copySidecarFiles } from '../quant/sidecar-files.ts';
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
  /** Where the warning about an adapter trained on another base goes (default: stderr). */
  warn?: (message: string) => void;
}

export interface MergeResult {
  out: string;
  mergedModules: number;
  tensors: number;
}

export async function mergeCheckpoint(opts: MergeOptions): Promise<MergeResult> {
  if (resolve(opts.model) === resolve(opts.out)) {
    throw new UserError('--out is the model directory itself; choose a different --out');
  }
  const base = await openFrozenBase(opts.model);
  let out: AtomicOutputDir | null = null;
  try {
    const { runtime, values } = await loadAdapterFor(base, opts.adapter, opts.warn);
    const cfg = runtime.config;
    if ((cfg.type === 'moka' || cfg.type === 'mokas') && cfg.gate === 'token') {
      throw new UserError(
        `a token-gated ${cfg.type} adapter depends on the input and has no single ΔW; use it unmerged (--adapter)`,
      );
    }
    out = await beginAtomicOutputDir(opts.out, { force: opts.force });
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
    const config: Record<string, unknown> = { ...base.config.raw, torch_dtype: torchDtypeName(dtype) };
    delete config.quantization_config;
    const ckpt = base.checkpoint;
    await writeCheckpoint(out.tmpDir, {
      config,
      tensors,
      shardSizeBytes: DEFAULT_MAX_SHARD_BYTES,
      tokenizerJson: ckpt.tokenizerJson ?? undefined,
      tokenizerConfig: ckpt.tokenizerConfig ?? undefined,
      generationConfig: ckpt.generationConfig ?? undefined,
    });
    await copySidecarFiles(opts.model, out.tmpDir);
    await out.commit();
    return { out: out.dir, mergedModules: adapted.size, tensors: tensors.size };
  } catch (err) {
    await out?.abort();
    throw err;
  } finally {
    await base.close();
  }
}
