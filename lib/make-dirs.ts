/**
 * `mkdir -p` without Node's recursive mkdir. Node 20's `mkdir(path, {recursive: true})` never returns for a path
 * under /proc (it retries the parent forever at full CPU), and a file in the way surfaces as a bare EEXIST or
 * ENOTDIR. This walks up only as far as needed, once, and lets the errno error (with its path) reach the caller,
 * where `userErrorFromFs` turns it into one line.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

function notADirectory(path: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`ENOTDIR: not a directory, mkdir '${path}'`);
  err.code = 'ENOTDIR';
  err.syscall = 'mkdir';
  err.path = path;
  return err;
}

/** Creates `path` and any missing parents; an existing directory is fine, an existing file is ENOTDIR. */
export async function makeDirs(path: string): Promise<void> {
  try {
    await mkdir(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      if (!(await stat(path)).isDirectory()) throw notADirectory(path);
      return;
    }
    const parent = dirname(path);
    if (code !== 'ENOENT' || parent === path) throw err;
    await makeDirs(parent);
    // Once: if the parent now exists and this still fails (e.g. ENOENT under /proc), the error is final.
    await mkdir(path).catch(async (again: NodeJS.ErrnoException) => {
      if (again.code !== 'EEXIST' || !(await stat(path)).isDirectory()) throw again;
    });
  }
}
