/**
 * The quantized-model cache key: SHA-256 over the source checkpoint's content (every file's name, size and
 * content hash) and the quantization settings, so a second run of the same model and settings reuses the
 * quantized copy, and a changed weight file or setting never does. Content hashes: S3's ETag (computed by S3,
 * no download needed) or the SHA-256 of a local file.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { writeFileAtomic } from '../atomic-write.ts';
import type { RunConfig } from './run-config.ts';
import { COMPLETE_MARKER, openStore, type OpenStoreOptions } from './store/index.ts';
import { UserError } from '../errors.ts';

/** Bumped when the quantizer's output for the same input changes. */
const CACHE_FORMAT = 1;

/**
 * SHA-256 of a local file, remembered per (path, size, mtime) in <work dir>/file-digests.json so that re-running
 * a pipeline on a multi-GB local model does not read it again (a changed file has a new size or mtime).
 */
async function sha256File(path: string): Promise<string> {
  const memo = join(process.env.MOKA_WORK_DIR ?? join(tmpdir(), 'moka-work'), 'file-digests.json');
  const s = await stat(path);
  const id = `${resolve(path)}:${s.size}:${s.mtimeMs}`;
  let known: Record<string, string> = {};
  try {
    known = JSON.parse(await readFile(memo, 'utf8')) as Record<string, string>;
  } catch {
    /* no memo yet, or an unreadable one: start afresh */
  }
  if (known[id]) return known[id];
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  const digest = hash.digest('hex');
  if (s.size >= 64 * 2 ** 20) {
    // Only big files are worth remembering; a lost race between two writers only costs a re-hash.
    await mkdir(dirname(memo), { recursive: true });
    await writeFileAtomic(memo, JSON.stringify({ ...known, [id]: digest }));
  }
  return digest;
}

/** [name, size, content hash] of every file of a model folder, sorted by name. */
export async function modelContentDigest(modelUri: string, opts: OpenStoreOptions = {}): Promise<string> {
  const store = openStore(modelUri, opts);
  const files = (await store.list('')).filter((o) => o.key.split('/').pop() !== COMPLETE_MARKER);
  if (files.length === 0) throw new UserError(`${modelUri} holds no files; give a Hugging Face model folder`);
  const entries: [string, number, string][] = [];
  for (const f of files) {
    const local = store.localPath(f.key);
    const hash = f.etag ?? (local ? await sha256File(local) : '');
    entries.push([f.key, f.size, hash]);
  }
  return createHash('sha256').update(JSON.stringify(entries)).digest('hex');
}

/** The cache key of the run's quantized base, or null when the run does not quantize. */
export async function quantizedModelKey(
  config: RunConfig,
  opts: OpenStoreOptions = {},
): Promise<string | null> {
  if (config.quantize === false) return null;
  const content = await modelContentDigest(config.model, opts);
  const q = config.quantize;
  const settings = {
    format: q.format,
    blockSize: q.blockSize,
    doubleQuant: q.doubleQuant,
    symmetric: q.symmetric,
    quantizeLmHead: q.quantizeLmHead,
  };
  const digest = createHash('sha256')
    .update(JSON.stringify({ v: CACHE_FORMAT, content, settings }))
    .digest('hex')
    .slice(0, 32);
  return `${q.format}-${digest}`;
}
