/**
 * The streaming quantizer: a Hugging Face LLaMA checkpoint in, a loadable 4-bit checkpoint out.
 *
 * The seven linear projections of every decoder layer (q/k/v/o/gate/up/down) are quantized (NF4 in the
 * transformers + bitsandbytes layout, or int4 in ONNX Runtime's MatMulNBits layout); embeddings, norms and
 * lm_head keep their stored bytes (lm_head is quantized only on request: transformers itself keeps it in 16 bits,
 * and never quantizes embeddings). The output has the same directory layout, `quantization_config` in
 * config.json, the tokenizer and licence files copied, and `quantize-summary.json` with the reconstruction error
 * of every quantized weight and the throughput.
 *
 * Memory: one block of rows of one tensor at a time (streaming-quantize.ts). Pass 1 reads, quantizes and
 * measures each projection and appends
 * its (4× smaller) tensors to a spool file; pass 2 writes the safetensors shards, whose headers need every
 * tensor's size up front, copying kept tensors from the source one at a time and quantized ones from the spool.
 * Output is atomic (atomic-output-dir.ts): everything is written to `<out>.tmp-<pid>` and renamed at the end.
 */
import { createHash } from 'node:crypto';
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UserError, withFsPath } from '../errors.ts';
import {
  CONFIG_FILE,
  SINGLE_WEIGHTS_FILE,
  WEIGHTS_INDEX_FILE,
  openCheckpoint,
  shardFileName,
  planShards,
  validateLlamaTensors,
  type Checkpoint,
} from '../model/checkpoint.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import { decodeFloat32, isFloatDtype, type SafetensorsDtype } from '../model/dtype-convert.ts';
import { SafetensorsWriter, type TensorSpec } from '../model/safetensors.ts';
import { beginAtomicOutputDir, type AtomicOutputDir } from './atomic-output-dir.ts';
import { bnbQuantizationConfig, nf4ToTensors } from './bnb-serialization.ts';
import { INT4_BLOCK_SIZES, INT4_DEFAULT_BLOCK_SIZE, checkInt4BlockSize } from './int4.ts';
import { int4QuantizationConfig, int4ToTensors } from './int4-serialization.ts';
import { BNB_BLOCK_SIZES, NF4_DEFAULT_BLOCK_SIZE, checkNf4BlockSize, type SourceDtype } from './nf4.ts';
import type { QuantTensor } from './quant-tensor.ts';
import { quantFormatOf } from './quantized-checkpoint.ts';
import type { QuantFormat } from './quantized-weight.ts';
import { quantizeStreaming } from './streaming-quantize.ts';
import { copySidecarFiles } from './sidecar-files.ts';

export const SUMMARY_FILE = 'quantize-summary.json';
/** transformers' `save_pretrained` default `max_shard_size` ("5GB"). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

const PROJECTION_WEIGHT = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/;
const LM_HEAD = 'lm_head.weight';
const SPOOL_FILE = '.quantize-spool';
/** Spool bytes are copied into the shards in pieces of this size. */
const COPY_CHUNK_BYTES = 64 << 20;

export interface QuantizeCheckpointOptions {
  modelDir: string;
  outDir: string;
  format: QuantFormat;
  /** Default 64. NF4: 32…4096 (bnb's sizes); int4: 16…256. Powers of two. */
  blockSize?: number;
  /** NF4 only: 8-bit absmax (QLoRA's double quantization). Default false, as in bitsandbytes. */
  doubleQuant?: boolean;
  /** int4 only: symmetric (no zero points). Default false (asymmetric). */
  symmetric?: boolean;
  /**
   * Quantize lm_head too. Default false. Refused when config.json ties the head to the embedding
   * (tie_word_embeddings): the model's head is then the 16-bit embedding, whatever lm_head.weight a file ships.
   */
  quantizeLmHead?: boolean;
  /** Replace an output directory that holds something else. */
  force?: boolean;
  /** Start a new shard before this many bytes (default 5 GB, like transformers). */
  maxShardBytes?: number;
  onProgress?: (event: QuantizeProgress) => void;
}

export type QuantizeProgress =
  | {
      phase: 'quantize';
      tensor: string;
      /** 1-based position among the weights to quantize. */
      index: number;
      count: number;
      /** Input bytes of the weights to quantize, done so far / in total. */
      bytesDone: number;
      bytesTotal: number;
      relativeError: number;
    }
  | { phase: 'write'; file: string; bytesDone: number; bytesTotal: number };

export interface QuantizedLayerReport {
  name: string;
  /** Logical [out, in]. */
  shape: number[];
  /** Source dtype. */
  dtype: SafetensorsDtype;
  /** ‖W − deq(W)‖_F / ‖W‖_F. */
  relativeError: number;
  maxAbsError: number;
  /** ‖W‖_F, so errors can be pooled over several weights. */
  frobeniusNorm: number;
  inputBytes: number;
  outputBytes: number;
}

export interface QuantizeSummary {
  kind: 'moka.quantize-summary';
  version: 1;
  createdAt: string;
  format: QuantFormat;
  options: { blockSize: number; doubleQuant: boolean; symmetric: boolean; quantizeLmHead: boolean };
  source: {
    dir: string;
    /** sha256 of config.json and the tensor names, dtypes and shapes: identifies the model, not its values. */
    fingerprint: string;
    /** sha256 over every tensor's bytes (name-sorted list of per-tensor hashes): identifies the values. */
    contentSha256: string;
    tensors: number;
    bytes: number;
  };
  output: { dir: string; files: string[]; weightBytes: number };
  /** One entry per quantized weight, in checkpoint order. */
  layers: QuantizedLayerReport[];
  /** Relative Frobenius error over all projections of each decoder layer together. */
  decoderLayers: { layer: number; relativeError: number }[];
  /** Tensors stored unchanged. */
  kept: string[];
  totals: {
    quantizedWeights: number;
    quantizedParameters: number;
    /** Output bits per quantized parameter, scales and metadata included. */
    bitsPerQuantizedWeight: number;
    /** Relative error over all quantized weights together (‖ΔW‖ / ‖W‖ over their concatenation). */
    relativeError: number;
    meanRelativeError: number;
    maxRelativeError: number;
    worstLayer: string | null;
  };
  timing: {
    seconds: number;
    quantizeSeconds: number;
    writeSeconds: number;
    /** MB (10^6 bytes) of input weights per second, whole run. */
    throughputMBps: number;
    /** MB/s of the weights that were quantized, through read + quantize + error measurement. */
    quantizeThroughputMBps: number;
  };
}

interface ResolvedOptions {
  format: QuantFormat;
  blockSize: number;
  doubleQuant: boolean;
  symmetric: boolean;
  quantizeLmHead: boolean;
}

/** Checks option combinations; every problem is a one-line UserError saying what to change. */
export function resolveQuantizeOptions(
  opts: Omit<QuantizeCheckpointOptions, 'modelDir' | 'outDir'>,
): ResolvedOptions {
  const format = opts.format;
  if (format !== 'nf4' && format !== 'int4') {
    throw new UserError(`unknown format ${JSON.stringify(format)}; use --format nf4 or --format int4`);
  }
  const blockSize = opts.blockSize ?? (format === 'nf4' ? NF4_DEFAULT_BLOCK_SIZE : INT4_DEFAULT_BLOCK_SIZE);
  try {
    if (format === 'nf4') checkNf4BlockSize(blockSize);
    else checkInt4BlockSize(blockSize);
  } catch {
    const allowed = (format === 'nf4' ? BNB_BLOCK_SIZES : INT4_BLOCK_SIZES).join(', ');
    throw new UserError(
      `--block-size ${blockSize} is not supported for ${format}: use a power of two among ${allowed}`,
    );
  }
  if (format === 'int4' && opts.doubleQuant) {
    throw new UserError('--double-quant applies to nf4 only; drop it or use --format nf4');
  }
  if (format === 'nf4' && opts.symmetric) {
    throw new UserError(
      '--symmetric applies to int4 only (NF4 is always absmax-scaled); drop it or use --format int4',
    );
  }
  if (opts.maxShardBytes !== undefined && !(opts.maxShardBytes > 0)) {
    throw new UserError(`the maximum shard size must be positive, got ${opts.maxShardBytes}`);
  }
  return {
    format,
    blockSize,
    doubleQuant: opts.doubleQuant ?? false,
    symmetric: opts.symmetric ?? false,
    quantizeLmHead: opts.quantizeLmHead ?? false,
  };
}

/** Identifies a model by its config and tensor layout (cheap: no weight is read). */
export function checkpointFingerprint(ckpt: Checkpoint): string {
  const raw = { ...ckpt.config.raw };
  delete raw.quantization_config;
  const tensors = ckpt.tensorNames().map((n) => {
    const t = ckpt.info(n);
    return [n, t.dtype, t.shape];
  });
  return createHash('sha256')
    .update(JSON.stringify({ config: raw, tensors }))
    .digest('hex');
}

function sourceDtypeOf(dtype: SafetensorsDtype): SourceDtype {
  // bnb quantizes 16/32-bit floats; a float64 checkpoint is recorded as float32, the precision we compute in.
  return dtype === 'F16' || dtype === 'BF16' ? dtype : 'F32';
}

/** A tensor of the output: where its bytes come from in pass 2. */
type OutputTensor = TensorSpec &
  ({ from: 'source'; byteLength: number } | { from: 'spool'; offset: number; byteLength: number });

/** Tensors that must share a shard (a quantized weight and its companions). */
type OutputGroup = OutputTensor[];

async function describeExistingOutput(
  dir: string,
  entries: string[],
  fingerprint: string,
): Promise<string | null> {
  if (entries.includes(SUMMARY_FILE)) {
    try {
      const s = JSON.parse(await readFile(join(dir, SUMMARY_FILE), 'utf8')) as Partial<QuantizeSummary>;
      if (s.kind === 'moka.quantize-summary' && s.version !== 1) {
        return `a quantization summary of format version ${JSON.stringify(s.version)}, which this moka does not know`;
      }
      if (s.kind === 'moka.quantize-summary' && s.source?.fingerprint === fingerprint) return null;
      if (s.kind === 'moka.quantize-summary')
        return `a quantization of a different model (from ${s.source?.dir})`;
    } catch {
      // Unreadable summary: fall through to the generic description.
    }
  }
  if (entries.includes(CONFIG_FILE)) return 'a different model (it has its own config.json)';
  const shown = entries.slice(0, 3).join(', ');
  return `${entries.length} other file(s) (${shown}${entries.length > 3 ? ', …' : ''})`;
}

async function readSpool(
  spool: FileHandle,
  buffer: Uint8Array,
  position: number,
  length: number,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await spool.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`quantize spool ended early at ${position + done}`);
    done += bytesRead;
  }
}

/** Quantizes a checkpoint directory; see the module comment. Returns (and writes) the summary. */
export async function quantizeCheckpoint(opts: QuantizeCheckpointOptions): Promise<QuantizeSummary> {
  const options = resolveQuantizeOptions(opts);
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const modelDir = resolve(opts.modelDir);
  const outDir = resolve(opts.outDir);
  if (modelDir === outDir)
    throw new UserError(`--out is the model directory itself; choose a different --out`);
  const started = performance.now();
  const progress = opts.onProgress ?? (() => undefined);

  // Validation waits until we know the model is not already quantized, which would fail it confusingly.
  const ckpt = await openCheckpoint(modelDir, { validate: false });
  let out: AtomicOutputDir | null = null;
  let spool: FileHandle | null = null;
  try {
    const existing = quantFormatOf(ckpt.config.raw, join(modelDir, CONFIG_FILE));
    if (existing !== null) {
      throw new UserError(
        `${modelDir} is already quantized (${existing}); quantize the original 16-bit model instead`,
      );
    }
    validateLlamaTensors(ckpt.config, new Map(ckpt.tensorNames().map((n) => [n, ckpt.info(n)])), modelDir);
    if (options.quantizeLmHead && ckpt.config.tieWordEmbeddings) {
      throw new UserError(
        `--quantize-lm-head: ${modelDir}/config.json ties the output head to the input embedding ` +
          '(tie_word_embeddings: true), so the head is the embedding and stays in 16 bits' +
          `${ckpt.has(LM_HEAD) ? ` (the ${LM_HEAD} in the files is an unused copy)` : ''}; ` +
          'quantize without --quantize-lm-head',
      );
    }
    const fingerprint = checkpointFingerprint(ckpt);
    out = await beginAtomicOutputDir(outDir, {
      force: opts.force,
      replaceable: (dir, entries) => describeExistingOutput(dir, entries, fingerprint),
    });

    const names = ckpt.tensorNames();
    const toQuantize = new Set(
      names.filter((n) => {
        const t = ckpt.info(n);
        const wanted = PROJECTION_WEIGHT.test(n) || (options.quantizeLmHead && n === LM_HEAD);
        return wanted && t.shape.length === 2 && isFloatDtype(t.dtype);
      }),
    );
    const quantizeBytesTotal = [...toQuantize].reduce((a, n) => a + ckpt.info(n).byteLength, 0);
    const tensorHashes: string[] = [];

    // Pass 1: quantize each projection, a block of rows in memory at a time.
    const t1 = performance.now();
    spool = await open(join(out.tmpDir, SPOOL_FILE), 'w+');
    let spoolBytes = 0;
    const groups = new Map<string, OutputGroup>();
    const layers: QuantizedLayerReport[] = [];
    let bytesDone = 0;
    let index = 0;
    for (const name of names) {
      if (!toQuantize.has(name)) continue;
      const info = ckpt.info(name);
      const dtype = sourceDtypeOf(info.dtype);
      // Rows are read and quantized a block at a time (streaming-quantize.ts); the content hash follows along.
      const hash = createHash('sha256');
      let hashed = 0;
      const readRows = async (r0: number, r1: number) => {
        const raw = await ckpt.readRows(name, r0, r1);
        if (r0 === hashed) {
          hash.update(raw);
          hashed = r1;
        }
        // Checkpoint.readRows has already rejected a NaN/±Inf weight, naming the tensor and the position.
        return decodeFloat32(info.dtype, raw);
      };
      const shape2 = info.shape as [number, number];
      const { weight, error } =
        options.format === 'nf4'
          ? await quantizeStreaming(readRows, shape2, {
              format: 'nf4',
              blockSize: options.blockSize,
              doubleQuant: options.doubleQuant,
              dtype,
            })
          : await quantizeStreaming(readRows, shape2, {
              format: 'int4',
              blockSize: options.blockSize,
              symmetric: options.symmetric,
              dtype,
            });
      tensorHashes.push(`${name}\t${hash.digest('hex')}`);
      const tensors: QuantTensor[] =
        weight.format === 'nf4' ? nf4ToTensors(name, weight) : int4ToTensors(name, weight);
      const group: OutputGroup = [];
      let outputBytes = 0;
      for (const t of tensors) {
        await spool.write(t.bytes, 0, t.bytes.length, spoolBytes);
        group.push({
          name: t.name,
          dtype: t.dtype,
          shape: t.shape,
          from: 'spool',
          offset: spoolBytes,
          byteLength: t.bytes.length,
        });
        spoolBytes += t.bytes.length;
        outputBytes += t.bytes.length;
      }
      groups.set(name, group);
      layers.push({
        name,
        shape: [...info.shape],
        dtype: info.dtype,
        relativeError: error.relativeFrobenius,
        maxAbsError: error.maxAbs,
        frobeniusNorm: error.frobenius,
        inputBytes: info.byteLength,
        outputBytes,
      });
      bytesDone += info.byteLength;
      index++;
      progress({
        phase: 'quantize',
        tensor: name,
        index,
        count: toQuantize.size,
        bytesDone,
        bytesTotal: quantizeBytesTotal,
        relativeError: error.relativeFrobenius,
      });
    }
    const quantizeSeconds = (performance.now() - t1) / 1000;

    // Pass 2: shards in source order, kept tensors straight from the source, quantized ones from the spool.
    const t2 = performance.now();
    const ordered: OutputGroup[] = names.map(
      (n) => groups.get(n) ?? [{ ...pick(ckpt, n), from: 'source', byteLength: ckpt.info(n).byteLength }],
    );
    // A weight and its companions are one group, never split across shards.
    const shards = planShards(
      ordered.map((g) => g.reduce((a, t) => a + t.byteLength, 0)),
      maxShardBytes,
    ).map((indices) => indices.map((i) => ordered[i]!));
    const weightBytes = ordered.flat().reduce((a, t) => a + t.byteLength, 0);
    const weightMap: Record<string, string> = {};
    const files: string[] = [];
    const buffer = new Uint8Array(Math.min(COPY_CHUNK_BYTES, Math.max(1, spoolBytes)));
    let written = 0;
    for (let s = 0; s < shards.length; s++) {
      const file = shards.length === 1 ? SINGLE_WEIGHTS_FILE : shardFileName(s, shards.length);
      const members = shards[s]!.flat();
      const writer = await SafetensorsWriter.create(
        join(out.tmpDir, file),
        members.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
        { format: 'pt' },
      );
      try {
        for (const t of members) {
          if (t.from === 'source') {
            const raw = await ckpt.readRaw(t.name);
            tensorHashes.push(`${t.name}\t${createHash('sha256').update(raw).digest('hex')}`);
            await writer.write(t.name, raw);
          } else {
            for (let off = 0; off < t.byteLength; off += buffer.length) {
              const n = Math.min(buffer.length, t.byteLength - off);
              await readSpool(spool, buffer, t.offset + off, n);
              await writer.write(t.name, buffer.subarray(0, n));
            }
          }
          weightMap[t.name] = file;
          written += t.byteLength;
          progress({ phase: 'write', file, bytesDone: written, bytesTotal: weightBytes });
        }
      } catch (err) {
        await writer.abort();
        throw err;
      }
      await writer.finish();
      files.push(file);
    }
    await spool.close();
    spool = null;
    await rm(join(out.tmpDir, SPOOL_FILE), { force: true });
    if (shards.length > 1) {
      await writeFileAtomic(
        join(out.tmpDir, WEIGHTS_INDEX_FILE),
        `${JSON.stringify({ metadata: { total_size: weightBytes }, weight_map: weightMap }, null, 2)}\n`,
      );
      files.push(WEIGHTS_INDEX_FILE);
    }
    files.push(...(await copySidecarFiles(modelDir, out.tmpDir)));
    const writeSeconds = (performance.now() - t2) / 1000;

    const kept = names.filter((n) => !toQuantize.has(n));
    const computeDtype = computeDtypeOf(ckpt);
    const quantizedModules = new Set([...toQuantize].map((n) => n.replace(/\.weight$/, '')));
    const quantizationConfig =
      options.format === 'nf4'
        ? bnbQuantizationConfig({
            doubleQuant: options.doubleQuant,
            computeDtype,
            skipModules: quantizedModules.has('lm_head') ? [] : null,
          })
        : int4QuantizationConfig({
            blockSize: options.blockSize,
            symmetric: options.symmetric,
            computeDtype,
            modulesNotConverted: quantizedModules.has('lm_head') || !ckpt.has(LM_HEAD) ? [] : ['lm_head'],
          });

    const seconds = (performance.now() - started) / 1000;
    const sourceBytes = names.reduce((a, n) => a + ckpt.info(n).byteLength, 0);
    const summary: QuantizeSummary = {
      kind: 'moka.quantize-summary',
      version: 1,
      createdAt: new Date().toISOString(),
      format: options.format,
      options: {
        blockSize: options.blockSize,
        doubleQuant: options.doubleQuant,
        symmetric: options.symmetric,
        quantizeLmHead: options.quantizeLmHead,
      },
      source: {
        dir: modelDir,
        fingerprint,
        contentSha256: createHash('sha256').update(tensorHashes.sort().join('\n')).digest('hex'),
        tensors: names.length,
        bytes: sourceBytes,
      },
      output: { dir: outDir, files: [...files, SUMMARY_FILE, CONFIG_FILE], weightBytes },
      layers,
      decoderLayers: decoderLayerErrors(layers),
      kept,
      totals: totals(layers),
      timing: {
        seconds,
        quantizeSeconds,
        writeSeconds,
        throughputMBps: sourceBytes / 1e6 / Math.max(seconds, 1e-9),
        quantizeThroughputMBps: quantizeBytesTotal / 1e6 / Math.max(quantizeSeconds, 1e-9),
      },
    };
    await writeFileAtomic(join(out.tmpDir, SUMMARY_FILE), `${JSON.stringify(summary, null, 2)}\n`);
    // config.json last: inside the directory too, its presence means the rest is complete.
    const config = { ...ckpt.config.raw, quantization_config: quantizationConfig };
    await writeFileAtomic(join(out.tmpDir, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
    await ckpt.close();
    await out.commit();
    return summary;
  } catch (err) {
    await spool?.close().catch(() => undefined);
    await out?.abort();
    await ckpt.close();
    // The spool is written through a file handle: its errors (ENOSPC…) carry no path of their own.
    throw out ? withFsPath(err, out.tmpDir) : err;
  }
}

function pick(ckpt: Checkpoint, name: string): TensorSpec {
  const { dtype, shape } = ckpt.info(name);
  return { name, dtype, shape };
}

/** The dtype transformers should compute in: config.json's torch_dtype, else the projections' stored dtype. */
function computeDtypeOf(ckpt: Checkpoint): SourceDtype {
  const named = ckpt.config.torchDtype;
  if (named === 'bfloat16') return 'BF16';
  if (named === 'float16') return 'F16';
  if (named === 'float32') return 'F32';
  const first = ckpt.tensorNames().find((n) => PROJECTION_WEIGHT.test(n));
  return first ? sourceDtypeOf(ckpt.info(first).dtype) : 'F32';
}

/** Relative error of a set of weights taken together: sqrt(Σ‖ΔW‖² / Σ‖W‖²). */
function pooledRelativeError(layers: readonly QuantizedLayerReport[]): number {
  let err = 0;
  let ref = 0;
  for (const l of layers) {
    err += (l.relativeError * l.frobeniusNorm) ** 2;
    ref += l.frobeniusNorm ** 2;
  }
  return ref > 0 ? Math.sqrt(err / ref) : 0;
}

function decoderLayerErrors(layers: QuantizedLayerReport[]): { layer: number; relativeError: number }[] {
  const byLayer = new Map<number, QuantizedLayerReport[]>();
  for (const l of layers) {
    const m = /^model\.layers\.(\d+)\./.exec(l.name);
    if (!m) continue;
    const i = Number(m[1]);
    byLayer.set(i, [...(byLayer.get(i) ?? []), l]);
  }
  return [...byLayer.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([layer, ls]) => ({ layer, relativeError: pooledRelativeError(ls) }));
}

function totals(layers: QuantizedLayerReport[]): QuantizeSummary['totals'] {
  const params = layers.reduce((a, l) => a + l.shape.reduce((x, d) => x * d, 1), 0);
  const outBytes = layers.reduce((a, l) => a + l.outputBytes, 0);
  let worst: QuantizedLayerReport | null = null;
  for (const l of layers) if (!worst || l.relativeError > worst.relativeError) worst = l;
  return {
    quantizedWeights: layers.length,
    quantizedParameters: params,
    bitsPerQuantizedWeight: params ? (outBytes * 8) / params : 0,
    relativeError: pooledRelativeError(layers),
    meanRelativeError: layers.length ? layers.reduce((a, l) => a + l.relativeError, 0) / layers.length : 0,
    maxRelativeError: worst?.relativeError ?? 0,
    worstLayer: worst?.name ?? null,
  };
}
