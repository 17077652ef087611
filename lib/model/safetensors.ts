/**
 * The safetensors file format (huggingface/safetensors): an 8-byte little-endian u64 header length N, N bytes of
 * UTF-8 JSON, then the data buffer. Each header entry is `name: {dtype, shape, data_offsets: [begin, end)}` with
 * offsets relative to the data buffer; tensors are row-major, little-endian, with no holes, overlaps or padding
 * between them. An optional `__metadata__` entry maps strings to strings.
 *
 * Header checks are exactly the reference reader's (`SafeTensors::read_metadata` and `Metadata::validate` in
 * huggingface/safetensors): valid UTF-8 JSON (whitespace around the object allowed, no BOM), a
 * `__metadata__` that is absent, null or a string→string map, any of its dtypes (sub-byte F4/F6 tensors must fill
 * whole bytes), extra fields in an entry ignored, and the tensors sorted by offset tiling the data buffer exactly.
 * Refusing less would accept corrupt files; refusing more would reject files every other tool reads.
 *
 * Reading streams: `openSafetensors` reads only the header; each tensor is fetched with positional reads of its
 * own byte range, so a multi-GB shard is never held in memory whole. Writing streams too (`SafetensorsWriter`:
 * the header is written from the tensor specs up front, then the bytes tensor by tensor, in chunks if need be),
 * and is atomic: everything goes to `<path>.tmp-<pid>`, which is renamed over `path` only once complete.
 */
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { UserError, withFsPath } from '../errors.ts';
import { removeOnInterrupt, tempPathFor } from '../output-cleanup.ts';
import {
  DTYPE_BITS,
  assertLittleEndianHost,
  decodeFloat32,
  isFloatDtype,
  isSafetensorsDtype,
  numElements,
  type SafetensorsDtype,
} from './dtype-convert.ts';

/** The reference implementation refuses headers above 100 MB; so do we (a bigger one means a corrupt file). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Node's positional reads and writes take at most 2^31-1 bytes per call; we move big tensors in 1 GiB pieces. */
const IO_CHUNK_BYTES = 1 << 30;

export interface TensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
}

export interface TensorInfo extends TensorSpec {
  /** Byte range within the data buffer (relative to its start), end exclusive, as in the header. */
  dataOffsets: [number, number];
  byteLength: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Absolute file offset of the data buffer: 8 + header length. */
  dataStart: number;
}

/**
 * Validates a header (already read, `headerBytes` = the N bytes after the length prefix) against the file size.
 * `source` names the file in error messages.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  fileSize: number,
  source: string,
): SafetensorsHeader {
  const fail = (
    what: string,
    fix = 'The file is corrupt or not a safetensors file; re-download or re-create it.',
  ) => {
    throw new UserError(`${source}: ${what}. ${fix}`);
  };
  let text: string;
  try {
    // ignoreBOM keeps a byte-order mark in the text, so JSON.parse refuses it as the reference's serde_json does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail('the safetensors header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail(`the safetensors header is not valid JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    return fail('the safetensors header is not a JSON object');
  }
  const dataStart = 8 + headerBytes.byteLength;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null) continue; // serde's Option: null means absent
      if (typeof entry !== 'object' || Array.isArray(entry)) {
        fail('"__metadata__" must be an object of string values');
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`"__metadata__"."${k}" is ${JSON.stringify(v)}, not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      fail(`${where}: header entry is not an object with dtype, shape and data_offsets`);
    }
    const e = entry as Record<string, unknown>;
    if (typeof e.dtype !== 'string' || !isSafetensorsDtype(e.dtype)) {
      fail(
        `${where}: unknown dtype ${JSON.stringify(e.dtype)}`,
        `safetensors dtypes are ${Object.keys(DTYPE_BITS).join(', ')}.`,
      );
    }
    const dtype = e.dtype as SafetensorsDtype;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`${where}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    }
    const shape = e.shape as number[];
    const offsets = e.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      fail(
        `${where}: data_offsets ${JSON.stringify(offsets)} is not a pair [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataSize) {
      fail(
        `${where}: data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes after the header)`,
        'The file is truncated or its header is wrong; re-download or re-create it.',
      );
    }
    const bits = numElements(shape) * DTYPE_BITS[dtype];
    if (bits % 8 !== 0) {
      fail(`${where}: ${numElements(shape)} elements of ${dtype} (${bits} bits) do not fill whole bytes`);
    }
    const expected = bits / 8;
    if (end - begin !== expected) {
      fail(
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape ` +
          `${JSON.stringify(shape)} of ${dtype} needs ${expected}`,
      );
    }
    tensors.set(name, { name, dtype, shape, dataOffsets: [begin, end], byteLength: end - begin });
  }

  // The data buffer must be tiled exactly: sorted by offset, each tensor starts where the previous one ended.
  const ordered = [...tensors.values()].sort(
    (a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1],
  );
  let cursor = 0;
  let previous: TensorInfo | null = null;
  for (const t of ordered) {
    const [begin, end] = t.dataOffsets;
    if (begin < cursor) {
      fail(
        `tensor "${t.name}" (bytes [${begin}, ${end})) overlaps tensor "${previous!.name}" (ends at ${cursor})`,
      );
    }
    if (begin > cursor) {
      fail(
        `there is a hole of ${begin - cursor} bytes before tensor "${t.name}" (bytes [${cursor}, ${begin}) ` +
          'belong to no tensor)',
      );
    }
    cursor = end;
    previous = t;
  }
  if (cursor !== dataSize) {
    fail(
      `the tensors cover ${cursor} bytes of data but the file holds ${dataSize} after the header ` +
        `(${dataSize - cursor} bytes belong to no tensor)`,
    );
  }
  return { tensors, metadata, dataStart };
}

/** Reads exactly `target.byteLength` bytes at `position`, in ≤1 GiB pieces; a short file is a UserError. */
async function readFully(fh: FileHandle, target: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const want = Math.min(IO_CHUNK_BYTES, target.byteLength - done);
    const { bytesRead } = await fh.read(target, done, want, position + done);
    if (bytesRead === 0) {
      throw new UserError(
        `${what}: the file ended ${target.byteLength - done} bytes early (was it truncated or changed while open?)`,
      );
    }
    done += bytesRead;
  }
}

/** An open safetensors file: the parsed header plus a file handle for on-demand tensor reads. */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly header: SafetensorsHeader,
    readonly fileSize: number,
  ) {}

  /** Opens `path` and reads and validates its header only. */
  static async open(path: string): Promise<SafetensorsFile> {
    assertLittleEndianHost();
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new UserError(`${path}: no such file`);
      if (code === 'EISDIR') throw new UserError(`${path}: is a directory, not a safetensors file`);
      throw new UserError(`${path}: cannot open (${(err as Error).message})`);
    }
    try {
      const fileSize = (await fh.stat()).size;
      if (fileSize < 8) {
        throw new UserError(
          `${path}: ${fileSize} bytes is too short for a safetensors file (it needs at least an 8-byte header length). ` +
            'The file is truncated; re-download or re-create it.',
        );
      }
      const prefix = new Uint8Array(8);
      await readFully(fh, prefix, 0, path);
      const n = Buffer.from(prefix.buffer).readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new UserError(
          `${path}: the safetensors header claims ${n} bytes, above the ${MAX_HEADER_BYTES}-byte limit. ` +
            'The file is corrupt or not a safetensors file.',
        );
      }
      const headerLength = Number(n);
      if (8 + headerLength > fileSize) {
        throw new UserError(
          `${path}: the safetensors header claims ${headerLength} bytes but the file has only ${fileSize - 8} ` +
            'after the length prefix. The file is truncated or not a safetensors file; re-download or re-create it.',
        );
      }
      const headerBytes = new Uint8Array(headerLength);
      await readFully(fh, headerBytes, 8, path);
      const header = parseSafetensorsHeader(headerBytes, fileSize, path);
      return new SafetensorsFile(path, fh, header, fileSize);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  /** Tensor names in data-buffer order. */
  names(): string[] {
    return [...this.header.tensors.values()]
      .sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1])
      .map((t) => t.name);
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new UserError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  /**
   * Where the tensor's bytes lie in the file: an absolute byte offset and length. Lets a consumer reference the
   * stored bytes in place (e.g. a float32 weight handed to ONNX Runtime as external data) instead of reading them.
   */
  byteRange(name: string): { offset: number; length: number } {
    const t = this.info(name);
    return { offset: this.header.dataStart + t.dataOffsets[0], length: t.byteLength };
  }

  /** The tensor's bytes (little-endian, row-major), in a fresh buffer of exactly its byte length. */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    return this.readBytes(t, 0, t.byteLength);
  }

  /**
   * Rows `[start, end)` along the first dimension, as raw bytes: lets a streaming consumer (the quantizer) walk
   * a large matrix in row blocks without reading all of it.
   */
  async readRows(name: string, start: number, end: number): Promise<Uint8Array> {
    const t = this.info(name);
    const rows = t.shape.length === 0 ? 1 : t.shape[0]!;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > rows) {
      throw new Error(
        `${this.path}: rows [${start}, ${end}) out of range for tensor "${name}" with ${rows} rows`,
      );
    }
    const rowBytes = rows === 0 ? 0 : t.byteLength / rows;
    return this.readBytes(t, start * rowBytes, end * rowBytes);
  }

  /** The tensor converted to float32 (F32, F16, BF16 and F64 tensors). */
  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    if (!isFloatDtype(t.dtype)) {
      throw new UserError(
        `${this.path}: tensor "${name}" has dtype ${t.dtype}; only F32, F16, BF16 and F64 tensors convert to float32`,
      );
    }
    const raw = await this.readRaw(name);
    // readRaw's buffer is fresh and ours: view F32 in place instead of copying a possibly huge tensor.
    if (t.dtype === 'F32') return new Float32Array(raw.buffer, 0, raw.byteLength / 4);
    return decodeFloat32(t.dtype, raw);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private async readBytes(t: TensorInfo, from: number, to: number): Promise<Uint8Array> {
    if (this.closed) throw new Error(`${this.path}: read after close`);
    // A fresh ArrayBuffer (offset 0) so callers can take aligned typed views of the result.
    const out = new Uint8Array(to - from);
    await readFully(
      this.fh,
      out,
      this.header.dataStart + t.dataOffsets[0] + from,
      `${this.path} (tensor "${t.name}")`,
    );
    return out;
  }
}

export function openSafetensors(path: string): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path);
}

function validateSpecs(specs: readonly TensorSpec[], path: string): void {
  const seen = new Set<string>();
  for (const s of specs) {
    if (typeof s.name !== 'string' || s.name.length === 0 || s.name === '__metadata__') {
      throw new UserError(`${path}: invalid tensor name ${JSON.stringify(s.name)}`);
    }
    if (seen.has(s.name)) throw new UserError(`${path}: tensor "${s.name}" is listed twice`);
    seen.add(s.name);
    if (!isSafetensorsDtype(s.dtype)) {
      throw new UserError(`${path}: tensor "${s.name}" has unknown dtype ${JSON.stringify(s.dtype)}`);
    }
    if (!Array.isArray(s.shape) || !s.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new UserError(`${path}: tensor "${s.name}" has invalid shape ${JSON.stringify(s.shape)}`);
    }
  }
}

/** Bytes of a tensor's data; a sub-byte tensor (F4, F6_*) that does not fill whole bytes is refused. */
export function tensorByteLength(spec: Pick<TensorSpec, 'dtype' | 'shape'>): number {
  const bits = numElements(spec.shape) * DTYPE_BITS[spec.dtype];
  if (bits % 8 !== 0) {
    throw new UserError(
      `a ${spec.dtype} tensor of shape ${JSON.stringify(spec.shape)} (${bits} bits) does not fill whole bytes`,
    );
  }
  return bits / 8;
}

/** Builds the header bytes (length prefix included), padded with spaces to a multiple of 8 as the reference does. */
export function encodeSafetensorsHeader(
  specs: readonly TensorSpec[],
  metadata: Record<string, string> = {},
): { bytes: Uint8Array; dataBytes: number } {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const s of specs) {
    const n = tensorByteLength(s);
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) json = Buffer.concat([json, Buffer.alloc(padded - json.byteLength, 0x20)]);
  const bytes = new Uint8Array(8 + json.byteLength);
  Buffer.from(bytes.buffer).writeBigUInt64LE(BigInt(json.byteLength), 0);
  bytes.set(json, 8);
  return { bytes, dataBytes: offset };
}

function asBytes(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Writes a safetensors file tensor by tensor. The specs (and so the header) are fixed up front; then `write`
 * is called with each tensor's bytes in spec order, once or in several chunks. `finish` renames the temporary
 * file into place; `abort` (or any failed call) removes it, so `path` is either the old file or a complete one.
 */
export class SafetensorsWriter {
  private index = 0;
  private written = 0;
  private position: number;
  private done = false;
  /** Removes the temporary file if the process is interrupted before finish/abort. */
  private readonly unregister: () => void;

  private constructor(
    readonly path: string,
    private readonly tmpPath: string,
    private readonly fh: FileHandle,
    private readonly specs: readonly TensorSpec[],
    headerBytes: number,
  ) {
    this.position = headerBytes;
    this.unregister = removeOnInterrupt(tmpPath);
  }

  static async create(
    path: string,
    specs: readonly TensorSpec[],
    metadata: Record<string, string> = {},
  ): Promise<SafetensorsWriter> {
    assertLittleEndianHost();
    validateSpecs(specs, path);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new UserError(`${path}: metadata "${k}" must be a string`);
    }
    const { bytes } = encodeSafetensorsHeader(specs, metadata);
    if (bytes.byteLength - 8 > MAX_HEADER_BYTES) {
      throw new UserError(
        `${path}: the header would exceed ${MAX_HEADER_BYTES} bytes (too many tensors in one file)`,
      );
    }
    const tmpPath = tempPathFor(path);
    const fh = await open(tmpPath, 'w').catch((err) => {
      throw withFsPath(err, tmpPath);
    });
    const writer = new SafetensorsWriter(path, tmpPath, fh, specs, bytes.byteLength);
    try {
      await writer.writeAt(bytes, 0);
    } catch (err) {
      await writer.abort();
      throw withFsPath(err, tmpPath);
    }
    return writer;
  }

  /** The name of the tensor whose bytes are expected next, or null when all are written. */
  get nextTensor(): string | null {
    this.skipEmpty();
    return this.index < this.specs.length ? this.specs[this.index]!.name : null;
  }

  /** Appends bytes of tensor `name`, which must be the current tensor (spec order); chunks may be any size. */
  async write(name: string, data: ArrayBufferView): Promise<void> {
    if (this.done) throw new Error(`${this.path}: write after finish/abort`);
    // Empty chunks (including the data of 0-element tensors) carry nothing; accept them for any known tensor.
    if (data.byteLength === 0 && this.specs.some((s) => s.name === name)) return;
    this.skipEmpty();
    const spec = this.specs[this.index];
    try {
      if (!spec)
        throw new Error(`${this.path}: all tensors are already written; got more bytes for "${name}"`);
      if (spec.name !== name) {
        throw new Error(
          `${this.path}: expected bytes of tensor "${spec.name}" next (spec order), got "${name}"`,
        );
      }
      const total = tensorByteLength(spec);
      const bytes = asBytes(data);
      if (this.written + bytes.byteLength > total) {
        throw new Error(
          `${this.path}: tensor "${name}" (${spec.dtype} ${JSON.stringify(spec.shape)}) takes ${total} bytes; ` +
            `got ${this.written + bytes.byteLength}`,
        );
      }
      await this.writeAt(bytes, this.position);
      this.position += bytes.byteLength;
      this.written += bytes.byteLength;
      if (this.written === total) {
        this.index++;
        this.written = 0;
      }
    } catch (err) {
      await this.abort();
      throw withFsPath(err, this.tmpPath);
    }
  }

  /** Flushes to disk and renames the temporary file to `path`. Fails (and cleans up) if a tensor is incomplete. */
  async finish(): Promise<void> {
    if (this.done) throw new Error(`${this.path}: finish after finish/abort`);
    const missing = this.nextTensor;
    if (missing !== null) {
      await this.abort();
      throw new Error(`${this.path}: finish() before the bytes of tensor "${missing}" were all written`);
    }
    try {
      await this.fh.sync();
      await this.fh.close();
      this.done = true;
      await rename(this.tmpPath, this.path);
    } catch (err) {
      this.done = true;
      await this.fh.close().catch(() => undefined);
      await rm(this.tmpPath, { force: true });
      throw withFsPath(err, this.tmpPath);
    } finally {
      this.unregister();
    }
  }

  /** Discards the temporary file; `path` is left untouched. Safe to call more than once. */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.fh.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true });
    this.unregister();
  }

  private skipEmpty(): void {
    while (
      this.index < this.specs.length &&
      this.written === 0 &&
      tensorByteLength(this.specs[this.index]!) === 0
    ) {
      this.index++;
    }
  }

  private async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < bytes.byteLength) {
      const n = Math.min(IO_CHUNK_BYTES, bytes.byteLength - done);
      const { bytesWritten } = await this.fh.write(bytes, done, n, position + done);
      done += bytesWritten;
    }
  }
}

export interface SafetensorsTensor extends TensorSpec {
  data: ArrayBufferView;
}

/** Writes a whole file from in-memory tensors (in the given order), atomically. */
export async function writeSafetensors(
  path: string,
  tensors: readonly SafetensorsTensor[] | Record<string, Omit<SafetensorsTensor, 'name'>>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const list: SafetensorsTensor[] = Array.isArray(tensors)
    ? [...tensors]
    : Object.entries(tensors).map(([name, t]) => ({ name, ...t }));
  const writer = await SafetensorsWriter.create(
    path,
    list.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
    metadata,
  );
  for (const t of list) await writer.write(t.name, t.data);
  await writer.finish();
}
