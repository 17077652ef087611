/**
 * The artifact store: one interface over a folder (`file://` URIs and plain paths) and an S3 prefix (`s3://`),
 * under which every stage reads and writes a run's files. Keys are `/`-separated paths relative to the store's
 * root URI. Big files stream in both directions (never a whole file in memory).
 *
 * Atomicity: a single object (`writeText`, `putFile`) appears complete or not at all (temp + rename locally; S3
 * objects and completed multipart uploads are atomic). A folder (`putDir`) counts as complete only once its
 * `_COMPLETE` marker exists, which is written LAST and removed FIRST when the folder is rewritten, so a crash in
 * the middle of an upload never leaves something that looks complete (aws-pipeline-notes.md §6).
 */
import type { Readable } from 'node:stream';

/** Name of the marker that makes a folder complete (SageMaker-style step caching keys on it). */
export const COMPLETE_MARKER = '_COMPLETE';

export interface StoredObject {
  /** Key relative to the store root. */
  key: string;
  /** Bytes. */
  size: number;
  /** The S3 ETag (a content hash for single-part uploads), when the store has one. */
  etag?: string;
}

/** Inclusive byte range, as HTTP `Range: bytes=start-end`; `end` absent = to the end of the object. */
export interface ByteRange {
  start: number;
  end?: number;
}

export interface CompleteMarkerContents {
  files: StoredObject[];
  completedAt: string;
}

export interface ArtifactStore {
  /** The root URI (`file:///abs/dir` or `s3://bucket/prefix`), without a trailing slash. */
  readonly uri: string;
  /** The URI of `key`. */
  uriOf(key: string): string;
  /** The local path of `key` when the store is a local folder (lets stages read big files in place), else null. */
  localPath(key: string): string | null;
  /** Checks the store can be reached and written; throws a UserError saying why not. */
  check(): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** The object's text, or null when it does not exist. */
  readText(key: string): Promise<string | null>;
  /** Writes an object atomically. */
  writeText(key: string, text: string): Promise<void>;
  /** Streams a local file into `key` (multipart on S3), atomically. */
  putFile(key: string, localFile: string): Promise<void>;
  /** Streams `key` into a local file (temp + rename, so the local file is complete or absent). */
  getFile(key: string, localFile: string): Promise<void>;
  /** A stream of the object's bytes, or of one range of them. */
  openRead(key: string, range?: ByteRange): Promise<Readable>;
  /** Every object under `prefix` (a folder prefix; '' = everything), sorted by key. */
  list(prefix: string): Promise<StoredObject[]>;
  /** Deletes `key` and every object under `key/`. */
  delete(key: string): Promise<void>;
}

/** Joins key segments with '/', dropping empty ones. */
export function joinKey(...parts: string[]): string {
  return parts
    .flatMap((p) => p.split('/'))
    .filter((s) => s !== '')
    .join('/');
}

/** Refuses keys that could escape the store root or that S3 and filesystems treat differently. */
export function checkKey(key: string): string {
  const segments = key.split('/');
  if (key.startsWith('/') || segments.some((s) => s === '..' || s === '.') || /[\0\\]/.test(key)) {
    throw new Error(`invalid store key "${key}": keys are relative paths without ".", ".." or "\\"`);
  }
  return segments.filter((s) => s !== '').join('/');
}
