/**
 * An output directory that appears complete or not at all. Everything is written into `<out>.tmp-<pid>` beside
 * it (same filesystem, so the final rename is atomic); `commit` swaps it into place, `abort` deletes it. A crash
 * leaves only a `.tmp-<pid>` directory, which never looks like a model, and which the next run removes once its
 * process is gone.
 *
 * An existing non-empty `<out>` is replaced only when the caller's `replaceable` check accepts its contents
 * (e.g. an earlier quantization of the same model) or with `force`; otherwise it is refused with a UserError.
 */
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../errors.ts';

export interface AtomicOutputDir {
  /** The final directory. */
  dir: string;
  /** Where to write everything until `commit`. */
  tmpDir: string;
  /** True when `commit` will replace an existing directory. */
  replacing: boolean;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export interface AtomicOutputOptions {
  force?: boolean;
  /**
   * Called when `<out>` exists and is not empty: null if it may be replaced, otherwise a short description of
   * what it holds, used in the refusal message.
   */
  replaceable?: (dir: string, entries: string[]) => Promise<string | null>;
  /** Named in messages: the flag that picks the directory, e.g. "--out". */
  flag?: string;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `<out>.tmp-<pid>` / `<out>.old-<pid>` leftovers of runs whose process no longer exists. */
async function removeStaleSiblings(out: string): Promise<void> {
  const parent = dirname(out);
  const prefix = basename(out);
  let entries: string[];
  try {
    entries = await readdir(parent);
  } catch {
    return;
  }
  for (const e of entries) {
    const m = e.startsWith(prefix) ? /^\.(tmp|old)-(\d+)$/.exec(e.slice(prefix.length)) : null;
    if (m && Number(m[2]) !== process.pid && !processAlive(Number(m[2]))) {
      await rm(join(parent, e), { recursive: true, force: true });
    }
  }
}

export async function beginAtomicOutputDir(
  outDir: string,
  opts: AtomicOutputOptions = {},
): Promise<AtomicOutputDir> {
  const dir = resolve(outDir);
  const flag = opts.flag ?? '--out';
  let entries: string[] = [];
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new UserError(`${dir} exists and is not a directory; choose another ${flag}`);
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (entries.length > 0 && !opts.force) {
    const what = opts.replaceable ? await opts.replaceable(dir, entries) : `${entries.length} entries`;
    if (what !== null) {
      throw new UserError(
        `${dir} already holds ${what}; choose a new or empty ${flag} directory, or pass --force to replace it`,
      );
    }
  }
  await mkdir(dirname(dir), { recursive: true });
  await removeStaleSiblings(dir);
  const tmpDir = `${dir}.tmp-${process.pid}`;
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(tmpDir);
  const replacing = entries.length > 0;
  let finished = false;
  return {
    dir,
    tmpDir,
    replacing,
    async commit() {
      if (finished) throw new Error(`${dir}: commit after commit/abort`);
      finished = true;
      if (replacing) {
        // Two renames: the old directory is out of the way before the new one takes its name.
        const old = `${dir}.old-${process.pid}`;
        await rm(old, { recursive: true, force: true });
        await rename(dir, old);
        await rename(tmpDir, dir);
        await rm(old, { recursive: true, force: true });
      } else {
        // An existing empty directory (or none): rename cannot replace a directory on every platform. rmdir
        // (not rm -r) so that files someone put there meanwhile make this fail instead of vanishing.
        await rmdir(dir).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
        await rename(tmpDir, dir);
      }
    },
    async abort() {
      if (finished) return;
      finished = true;
      await rm(tmpDir, { recursive: true, force: true });
    },
  };
}
