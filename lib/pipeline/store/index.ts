/**
 * `openStore(uri)`: the artifact store for a URI: `s3://bucket/prefix` → S3Store, `file://…` or a plain path →
 * FileStore. See artifact-store.ts for the interface and its atomicity rules.
 */
import { FileStore } from './file-store.ts';
import { S3Store, type S3StoreOptions } from './s3-store.ts';
import type { ArtifactStore } from './artifact-store.ts';

export interface OpenStoreOptions {
  s3?: S3StoreOptions;
}

export function openStore(uri: string, opts: OpenStoreOptions = {}): ArtifactStore {
  if (uri.startsWith('s3://')) return new S3Store(uri, opts.s3);
  return new FileStore(uri);
}

/** The parent URI of `uri` and its last segment (`s3://b/runs/x` → [`s3://b/runs`, `x`]). */
export function splitUri(uri: string): [string, string] {
  const trimmed = uri.replace(/\/+$/, '');
  const at = trimmed.lastIndexOf('/');
  return at < 0 ? ['', trimmed] : [trimmed.slice(0, at), trimmed.slice(at + 1)];
}

/** The URI of `name` inside the folder `uri` (`s3://b/m` + `config.json` → `s3://b/m/config.json`). */
export function childUri(uri: string, name: string): string {
  return `${uri.replace(/\/+$/, '')}/${name}`;
}

export * from './artifact-store.ts';
export { FileStore, localPathOfUri, pathExists } from './file-store.ts';
export { S3Store, parseS3Uri, type S3StoreOptions } from './s3-store.ts';
export { getDir, isComplete, listLocalFiles, markComplete, putDir, readJson, writeJson } from './folders.ts';
export { isTransientError, withRetry, type RetryOptions } from './retry.ts';
