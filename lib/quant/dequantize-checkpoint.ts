/**
 * The way back: a 4-bit checkpoint (NF4 or int4) → a plain 16/32-bit Hugging Face checkpoint holding exactly
 * the weights the 4-bit model computes with (what training saw, and what an adapter trained on it should be
 * merged into). One tensor at a time; atomic like the quantizer (atomic-output-dir.ts).
 */
import { resolve } from 'node:path';
import { UserError } from '../errors.ts';
import { writeCheckpoint, type CheckpointTensorInput } from '../model/checkpoint.ts';
import { torchDtypeName } from '../model/dtype-convert.ts';
import { beginAtomicOutputDir, type AtomicOutputDir } from './atomic-output-dir.ts';
import type { SourceDtype } from './nf4.ts';
import { openQuantizedCheckpoint, type QuantizedCheckpoint } from './quantized-checkpoint.ts';
import { copySidecarFiles } from './sidecar-files.ts';
import { DEFAULT_MAX_SHARD_BYTES } from './quantize-checkpoint.ts';

export interface DequantizeCheckpointOptions {
  modelDir: string;
  outDir: string;
  /** Output dtype of every float tensor. Default: the dtype the weights had before quantization. */
  dtype?: SourceDtype;
  force?: boolean;
  maxShardBytes?: number;
  onProgress?: (event: { tensor: string; index: number; count: number }) => void;
}

export interface DequantizeResult {
  dir: string;
  format: 'nf4' | 'int4';
  dtype: SourceDtype;
  files: string[];
  tensors: number;
  dequantizedWeights: number;
  seconds: number;
  /** MB (10^6 bytes) of output weights per second. */
  throughputMBps: number;
}

/** The dtype the quantized weights came from (all agree in a moka checkpoint; the first one decides). */
function originalDtype(q: QuantizedCheckpoint): SourceDtype {
  const first = q.quantizedWeightNames()[0]!;
  const d = q.info(first).dtype;
  return d === 'F16' || d === 'BF16' ? d : 'F32';
}

export async function dequantizeCheckpoint(opts: DequantizeCheckpointOptions): Promise<DequantizeResult> {
  const modelDir = resolve(opts.modelDir);
  const outDir = resolve(opts.outDir);
  if (modelDir === outDir)
    throw new UserError('--out is the model directory itself; choose a different --out');
  const started = performance.now();
  const q = await openQuantizedCheckpoint(modelDir);
  let out: AtomicOutputDir | null = null;
  try {
    const dtype = opts.dtype ?? originalDtype(q);
    out = await beginAtomicOutputDir(outDir, { force: opts.force });
    const names = q.tensorNames();
    const tensors = new Map<string, CheckpointTensorInput>();
    let index = 0;
    for (const name of names) {
      const info = q.info(name);
      tensors.set(name, {
        dtype,
        shape: info.shape,
        // Runs when the writer reaches this tensor: one dequantized tensor in memory at a time.
        data: async () => {
          const values = await q.readFloat32(name);
          index++;
          opts.onProgress?.({ tensor: name, index, count: names.length });
          return values;
        },
      });
    }
    const config: Record<string, unknown> = { ...q.config.raw, torch_dtype: torchDtypeName(dtype) };
    delete config.quantization_config;
    const written = await writeCheckpoint(out.tmpDir, {
      config,
      tensors,
      shardSizeBytes: opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES,
    });
    // writeCheckpoint wrote config.json last; the sidecar files go in before the directory is renamed into place.
    const sidecars = await copySidecarFiles(modelDir, out.tmpDir);
    await q.close();
    await out.commit();
    const seconds = (performance.now() - started) / 1000;
    return {
      dir: outDir,
      format: q.format,
      dtype,
      files: [...written.files, ...sidecars.filter((f) => !written.files.includes(f))],
      tensors: names.length,
      dequantizedWeights: q.quantizedWeightNames().length,
      seconds,
      throughputMBps: written.totalSize / 1e6 / Math.max(seconds, 1e-9),
    };
  } catch (err) {
    await out?.abort();
    await q.close();
    throw err;
  }
}
