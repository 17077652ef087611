/**
 * The frozen float32 weights of a checkpoint, ready to become graph weights, prepared without ever holding the
 * whole model in memory:
 *
 * - F32 tensors are referenced where they lie in the safetensors file (`{file, offset, length}`); they are only
 *   scanned here, in blocks, for NaN/±Infinity (every weight is checked once at load, like every read through
 *   Checkpoint.readRaw). The engine reads them into the model (small models) or hands ONNX Runtime the byte range
 *   as external data (large ones), which maps the file.
 * - F16, BF16 and F64 tensors are converted to float32. While the converted total stays under `spillBytes`
 *   (default 256 MiB) they are kept in memory (a float32 copy: 2x the f16/bf16 bytes). Above it they are converted
 *   in row blocks into one temporary float32 file and referenced there like F32 tensors, so memory stays at one
 *   block while disk use is 2x the f16/bf16 bytes. `dispose()` deletes that file.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Graph, Tensor, WeightData } from '../engine/index.ts';
import { UserError, withFsPath } from '../errors.ts';
import { makeScratchDir, removeOnInterrupt } from '../output-cleanup.ts';
import type { Checkpoint } from './checkpoint.ts';
import { decodeFloat32, numElements } from './dtype-convert.ts';

/** Anything that can put a named frozen float32 weight into a graph (a loaded checkpoint, or test weights). */
export interface WeightSource {
  /** The weight as a tensor of `graph` (declared once per graph, so a tied weight is shared). */
  tensor(graph: Graph, name: string): Tensor;
  has(name: string): boolean;
  /** Frees what the source holds outside the JS heap (temporary files); called by the model's close(). */
  dispose?(): void;
}

export interface ModelWeightsOptions {
  /**
   * Which tensors to prepare (default: all). A caller that supplies some weights itself (e.g. the
   * 4-bit projections of lib/quant/frozen-base.ts, through the `base` projection hook) skips them here.
   */
  include?: (name: string) => boolean;
  /** Converted weights beyond this many float32 bytes in total go to a temporary file (default 256 MiB). */
  spillBytes?: number;
  /** Directory for that temporary file (default: the OS temp directory). */
  spillDir?: string;
}

const DEFAULT_SPILL_BYTES = 256 * 2 ** 20;
/** Conversion block: rows are read and converted this many source bytes at a time when spilling. */
const CONVERT_BLOCK_BYTES = 16 * 2 ** 20;

interface Entry {
  shape: number[];
  data: WeightData;
}

export class ModelWeights implements WeightSource {
  private readonly perGraph = new WeakMap<Graph, Map<string, Tensor>>();

  constructor(
    private readonly entries: ReadonlyMap<string, Entry>,
    /** Temporary directory holding converted weights, removed by dispose() (or on SIGINT/SIGTERM/SIGHUP). */
    private readonly spillDir: string | null = null,
    private readonly unregisterSpill: () => void = () => {},
  ) {}

  /** Weights held in memory (tests, small generated models). */
  static fromArrays(arrays: ReadonlyMap<string, { shape: number[]; data: Float32Array }>): ModelWeights {
    return new ModelWeights(new Map([...arrays].map(([n, e]) => [n, { shape: e.shape, data: e.data }])));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  shape(name: string): number[] {
    return this.entry(name).shape;
  }

  /** Where the float32 bytes are: in memory, or a byte range of a file. */
  data(name: string): WeightData {
    return this.entry(name).data;
  }

  /** True when converted weights live in a temporary file (see the module comment). */
  get spilled(): boolean {
    return this.spillDir !== null;
  }

  tensor(graph: Graph, name: string): Tensor {
    let declared = this.perGraph.get(graph);
    if (!declared) {
      declared = new Map();
      this.perGraph.set(graph, declared);
    }
    let t = declared.get(name);
    if (!t) {
      const e = this.entry(name);
      t = graph.weight(name, 'float32', e.shape, e.data);
      declared.set(name, t);
    }
    return t;
  }

  /** Removes the temporary file of converted weights, if any. Sessions built on these weights must be released first. */
  dispose(): void {
    if (this.spillDir) rmSync(this.spillDir, { recursive: true, force: true });
    this.unregisterSpill();
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) {
      throw new UserError(
        `weight "${name}" was not loaded: it is missing from the checkpoint or excluded by the weights filter`,
      );
    }
    return e;
  }
}

/** Prepares the checkpoint's weights as float32 graph weights; see the module comment. */
export async function loadModelWeights(
  ckpt: Checkpoint,
  opts: ModelWeightsOptions = {},
): Promise<ModelWeights> {
  const include = opts.include ?? (() => true);
  // A tied model's head is its embedding (transformers' tie_weights): an lm_head.weight in the files is never used.
  const unused = (n: string) => ckpt.config.tieWordEmbeddings && n === 'lm_head.weight';
  const names = ckpt.tensorNames().filter((n) => include(n) && !unused(n));
  const converted = names.filter((n) => ckpt.info(n).dtype !== 'F32');
  const convertedBytes = converted.reduce((s, n) => s + 4 * numElements(ckpt.info(n).shape), 0);
  const spill = convertedBytes > (opts.spillBytes ?? DEFAULT_SPILL_BYTES);
  const entries = new Map<string, Entry>();
  let spillDir: string | null = null;
  let fd: number | null = null;
  let offset = 0;
  let unregister = () => {};
  try {
    if (spill) {
      if (opts.spillDir) {
        spillDir = mkdtempSync(join(opts.spillDir, 'moka-weights-'));
        unregister = removeOnInterrupt(spillDir);
      } else {
        ({ dir: spillDir, done: unregister } = makeScratchDir('moka-weights-'));
      }
      fd = openSync(join(spillDir, 'converted-float32.bin'), 'w');
    }
    for (const name of names) {
      const info = ckpt.info(name);
      const shape = [...info.shape];
      if (info.dtype === 'F32') {
        // Used in place, never read here: scan it once (streaming) so a NaN/Inf weight fails now, named.
        await ckpt.assertFinite(name);
        entries.set(name, { shape, data: ckpt.location(name) });
      } else if (fd === null) {
        entries.set(name, { shape, data: await ckpt.readFloat32(name) });
      } else {
        const length = 4 * numElements(shape);
        await convertInto(ckpt, name, fd, offset);
        entries.set(name, {
          shape,
          data: { file: join(spillDir!, 'converted-float32.bin'), offset, length },
        });
        // 64-byte alignment keeps every tensor aligned for vectorised reads from a mapped file.
        offset += Math.ceil(length / 64) * 64;
      }
    }
  } catch (err) {
    if (fd !== null) closeSync(fd);
    if (spillDir) rmSync(spillDir, { recursive: true, force: true });
    unregister();
    throw spillDir ? withFsPath(err, spillDir) : err;
  }
  if (fd !== null) closeSync(fd);
  return new ModelWeights(entries, spillDir, unregister);
}

/** Converts one tensor to float32 into `fd` at `offset`, a block of rows at a time. */
async function convertInto(ckpt: Checkpoint, name: string, fd: number, offset: number): Promise<void> {
  const info = ckpt.info(name);
  const rows = info.shape.length === 0 ? 1 : info.shape[0]!;
  const rowBytes = rows === 0 ? 0 : info.byteLength / rows;
  const step = Math.max(1, Math.floor(CONVERT_BLOCK_BYTES / Math.max(rowBytes, 1)));
  let at = offset;
  for (let r = 0; r < rows; r += step) {
    const end = Math.min(rows, r + step);
    const raw = info.shape.length === 0 ? await ckpt.readRaw(name) : await ckpt.readRows(name, r, end);
    const values = decodeFloat32(info.dtype, raw);
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, at + done);
    at += bytes.length;
  }
}
