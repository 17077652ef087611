/**
 * The local-folder artifact store (`file://` URIs and plain paths). Objects are files under the root; writes go to
 * `<file>.tmp-<pid>` and are renamed into place, so a reader never sees half a file.
 */
import { createReadStream } from 'node:fs';
import { access, constants, copyFile, mkdir, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UserError } from '../../errors.ts';
import { writeFileAtomic } from '../../atomic-write.ts';
import { tempPathFor } from '../../output-cleanup.ts';
import { checkKey, type ArtifactStore, type ByteRange, type StoredObject } from './artifact-store.ts';

/** `file:///abs`, `file://rel` (taken as a path) or a plain path → an absolute path. */
export function localPathOfUri(uri: string): string {
  if (uri.startsWith('file://')) {
    return uri.startsWith('file:///') ? fileURLToPath(uri) : resolve(uri.slice('file://'.length));
  }
  return resolve(uri);
}

/** True when a local file or folder exists at `path`. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function copyAtomic(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  const tmp = tempPathFor(to);
  try {
    await copyFile(from, tmp);
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class FileStore implements ArtifactStore {
  readonly root: string;
  readonly uri: string;

  constructor(rootUri: string) {
    this.root = localPathOfUri(rootUri);
    this.uri = pathToFileURL(this.root).href.replace(/\/$/, '');
  }

  private path(key: string): string {
    const k = checkKey(key);
    return k === '' ? this.root : join(this.root, ...k.split('/'));
  }

  uriOf(key: string): string {
    const k = checkKey(key);
    return k === '' ? this.uri : `${this.uri}/${k.split('/').map(encodeURIComponent).join('/')}`;
  }

  localPath(key: string): string {
    return this.path(key);
  }

  async check(): Promise<void> {
    try {
      await mkdir(this.root, { recursive: true });
      await access(this.root, constants.W_OK);
    } catch (err) {
      throw new UserError(
        `the store ${this.root} cannot be written (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); choose another --store`,
      );
    }
  }

  async exists(key: string): Promise<boolean> {
    return pathExists(this.path(key));
  }

  async readText(key: string): Promise<string | null> {
    try {
      return await readFile(this.path(key), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async writeText(key: string, text: string): Promise<void> {
    const p = this.path(key);
    await mkdir(dirname(p), { recursive: true });
    await writeFileAtomic(p, text);
  }

  async putFile(key: string, localFile: string): Promise<void> {
    const p = this.path(key);
    if (resolve(localFile) === p) return;
    await copyAtomic(localFile, p);
  }

  async getFile(key: string, localFile: string): Promise<void> {
    const p = this.path(key);
    if (resolve(localFile) === p) return;
    try {
      await copyAtomic(p, localFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !(await this.exists(key))) {
        throw new UserError(`${this.uriOf(key)} does not exist`);
      }
      throw err;
    }
  }

  async openRead(key: string, range?: ByteRange): Promise<Readable> {
    const p = this.path(key);
    await stat(p).catch(() => {
      throw new UserError(`${this.uriOf(key)} does not exist`);
    });
    return createReadStream(
      p,
      range ? { start: range.start, ...(range.end !== undefined ? { end: range.end } : {}) } : {},
    );
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const base = this.path(prefix);
    const out: StoredObject[] = [];
    const walk = async (dir: string) => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (
          (err as NodeJS.ErrnoException).code === 'ENOENT' ||
          (err as NodeJS.ErrnoException).code === 'ENOTDIR'
        )
          return;
        throw err;
      }
      for (const e of entries) {
        const p = join(dir, e.name);
        // Temporary files of writes in progress are not objects yet.
        if (/\.tmp-\d+$/.test(e.name)) continue;
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) {
          out.push({ key: relative(this.root, p).split(sep).join('/'), size: (await stat(p)).size });
        }
      }
    };
    await walk(base);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { recursive: true, force: true });
  }
}
