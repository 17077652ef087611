/**
 * The quantized-model cache key: SHA-256 over the source checkpoint's content (every file's name, size and
 * content hash) and the quantization settings, so a second run of the same model and settings reuses the
 * quantized copy, and a changed weight file or setting never does. Content hashes: S3's ETag (computed by S3,
 * no download needed) or the SHA-256 of a local file.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { RunConfig } from './run-config.ts';
import { COMPLETE_MARKER, openStore, type OpenStoreOptions } from './store/index.ts';
import { UserError } from '../errors.ts';

/** Bumped when the quantizer's output for the same input changes. */
const CACHE_FORMAT = 1;

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
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
