/**
 * Folders in an artifact store: uploaded file by file, then made complete by writing `_COMPLETE` (the file list
 * with sizes) LAST; re-uploading removes the marker FIRST. Readers (`isComplete`, `getDir`) trust only folders
 * with a marker, so an upload killed half-way is never mistaken for a finished one.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { UserError } from '../../errors.ts';
import {
  COMPLETE_MARKER,
  joinKey,
  type ArtifactStore,
  type CompleteMarkerContents,
} from './artifact-store.ts';

/** Every regular file below `dir`, relative paths with '/', sorted. */
export async function listLocalFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && !/\.tmp-\d+$/.test(e.name)) out.push(relative(dir, p).split(sep).join('/'));
    }
  };
  await walk(dir);
  return out.sort();
}

export async function readJson<T>(store: ArtifactStore, key: string): Promise<T | null> {
  const text = await store.readText(key);
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new UserError(`${store.uriOf(key)} is not valid JSON (${(err as Error).message})`);
  }
}

export async function writeJson(store: ArtifactStore, key: string, value: unknown): Promise<void> {
  await store.writeText(key, `${JSON.stringify(value, null, 2)}\n`);
}

/** True when `prefix/_COMPLETE` exists. */
export function isComplete(store: ArtifactStore, prefix: string): Promise<boolean> {
  return store.exists(joinKey(prefix, COMPLETE_MARKER));
}

export interface PutDirOptions {
  /** Called after each file (progress). */
  onFile?: (file: string, bytes: number) => void;
  /** Test hook: called after each file is in the store, before the marker. */
  afterFile?: (file: string) => void | Promise<void>;
}

/**
 * Uploads a local folder to `prefix/` and marks it complete. Whatever `prefix/` held before is removed first
 * (marker first), so the result is exactly the local folder.
 */
export async function putDir(
  store: ArtifactStore,
  localDir: string,
  prefix: string,
  opts: PutDirOptions = {},
): Promise<void> {
  const files = (await listLocalFiles(localDir)).filter((f) => f !== COMPLETE_MARKER);
  await store.delete(joinKey(prefix, COMPLETE_MARKER));
  await store.delete(prefix);
  const listed = [];
  for (const f of files) {
    const local = join(localDir, ...f.split('/'));
    const size = (await stat(local)).size;
    await store.putFile(joinKey(prefix, f), local);
    listed.push({ key: f, size });
    opts.onFile?.(f, size);
    await opts.afterFile?.(f);
  }
  const marker: CompleteMarkerContents = { files: listed, completedAt: new Date().toISOString() };
  await store.writeText(joinKey(prefix, COMPLETE_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
}

/**
 * Downloads a complete folder `prefix/` into `localDir` (the files its marker lists). Throws a UserError when the
 * folder is not complete.
 */
export async function getDir(store: ArtifactStore, prefix: string, localDir: string): Promise<void> {
  const marker = await readJson<CompleteMarkerContents>(store, joinKey(prefix, COMPLETE_MARKER));
  if (!marker) throw new UserError(`${store.uriOf(prefix)} is not complete (no ${COMPLETE_MARKER} marker)`);
  for (const f of marker.files) {
    await store.getFile(joinKey(prefix, f.key), join(localDir, ...f.key.split('/')));
  }
}

/** Writes `prefix/_COMPLETE` listing what `prefix/` holds now (for folders written in place in a local store). */
export async function markComplete(store: ArtifactStore, prefix: string): Promise<void> {
  const base = prefix ? prefix.length + 1 : 0;
  const files = (await store.list(prefix))
    .filter((o) => o.key.split('/').pop() !== COMPLETE_MARKER)
    .map((o) => ({ key: o.key.slice(base), size: o.size }));
  const marker: CompleteMarkerContents = { files, completedAt: new Date().toISOString() };
  await store.writeText(joinKey(prefix, COMPLETE_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
}
