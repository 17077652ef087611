/**
 * An output directory that appears complete or not at all. Everything is written into `<out>.tmp-<pid>` beside
 * it (same filesystem, so the final rename is atomic); `commit` swaps it into place, `abort` deletes it. A crash
 * leaves only a `.tmp-<pid>` directory, which never looks like a model, and which the next run removes once its
 * process is gone; SIGINT/SIGTERM/SIGHUP and errors remove it at once (lib/output-cleanup.ts), and an interrupted
 * commit puts the previous directory back.
 *
 * An existing non-empty `<out>` is replaced only when the caller's `replaceable` check accepts its contents
 * (e.g. an earlier quantization of the same model) or with `force`; otherwise it is refused with a UserError.
 */
import { existsSync, renameSync } from 'node:fs';
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { registerCleanup, removeNow, removeStaleTempFiles } from '../output-cleanup.ts';

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
  await makeDirs(dirname(dir));
  // `<out>.tmp-<pid>` / `<out>.old-<pid>` of runs whose process is gone (a SIGKILL leaves them).
  await removeStaleTempFiles(dirname(dir), { prefix: `${basename(dir)}.` });
  const tmpDir = `${dir}.tmp-${process.pid}`;
  const old = `${dir}.old-${process.pid}`;
  await rm(tmpDir, { recursive: true, force: true });
  const unregister = registerCleanup(() => {
    removeNow(tmpDir);
    // Interrupted between the two renames of a commit: the previous directory goes back to its name.
    if (existsSync(old) && !existsSync(dir)) renameSync(old, dir);
  });
  try {
    await mkdir(tmpDir);
  } catch (err) {
    unregister();
    throw err;
  }
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
        await rm(old, { recursive: true, force: true });
        await rename(dir, old);
        await rename(tmpDir, dir);
        unregister();
        await rm(old, { recursive: true, force: true });
      } else {
        // An existing empty directory (or none): rename cannot replace a directory on every platform. rmdir
        // (not rm -r) so that files someone put there meanwhile make this fail instead of vanishing.
        await rmdir(dir).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
        await rename(tmpDir, dir);
        unregister();
      }
    },
    async abort() {
      if (finished) return;
      finished = true;
      await rm(tmpDir, { recursive: true, force: true });
      unregister();
    },
  };
}
