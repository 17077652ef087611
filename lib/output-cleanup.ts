/**
 * Partial output never outlives the command that wrote it. Every writer that creates something before it is
 * complete (a `<path>.tmp-<pid>` file, a `<out>.tmp-<pid>` directory, a temporary spill directory, a new output
 * directory) registers a synchronous cleanup for as long as the thing is incomplete:
 *
 * - on SIGINT, SIGTERM or SIGHUP the registered cleanups run and the process then dies of the same signal (exit
 *   status 128 + n, what a shell or a job scheduler expects), unless another handler owns the signal (the
 *   trainer's clean stop finishes its step and writes a checkpoint; its own writes clean up as they fail or end);
 * - on an error the writer's own catch removes it; `runCleanups` at the CLI boundary is the last resort;
 * - SIGKILL cannot be caught: a later run removes the leftovers of processes that no longer exist
 *   (`removeStaleTempFiles`), recognised by the `.tmp-<pid>` / `.old-<pid>` suffix moka's writers use.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CLEANUP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const cleanups = new Set<() => void>();
let installed = false;

function onSignal(signal: NodeJS.Signals): void {
  // Another listener (the trainer's clean stop, `moka stage`) owns this signal and decides when the process ends.
  // Owners must listen with process.on: a process.once listener is removed before it runs, so it is not counted.
  if (process.listenerCount(signal) > 1) return;
  runCleanups();
  uninstall();
  process.kill(process.pid, signal); // no listener left: the default action ends the process with 128 + n
}

function install(): void {
  if (installed) return;
  installed = true;
  for (const s of CLEANUP_SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  for (const s of CLEANUP_SIGNALS) process.removeListener(s, onSignal);
}

/**
 * Registers `cleanup` (synchronous, must not throw: use `rmSync(…, {force: true})`) to run if the process is
 * interrupted by a catchable signal. Returns the function that unregisters it, to call once the output is complete
 * or already cleaned up.
 */
export function registerCleanup(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  install();
  return () => {
    cleanups.delete(cleanup);
    if (cleanups.size === 0) uninstall();
  };
}

/**
 * Removes `path` (a file or a directory tree) synchronously, from a signal handler. Retries, because a file
 * operation already running on libuv's thread pool when the signal came can add an entry while the tree is being
 * removed (ENOTEMPTY); no new one can start while the handler runs.
 */
export function removeNow(path: string): void {
  rmSync(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
}

/** Registers the removal of `path` (a file or a directory tree); returns the unregister function. */
export function removeOnInterrupt(path: string): () => void {
  return registerCleanup(() => removeNow(path));
}

/** Runs (and forgets) every registered cleanup; each failure is ignored so that the others still run. */
export function runCleanups(): void {
  for (const c of [...cleanups]) {
    cleanups.delete(c);
    try {
      c();
    } catch {
      // best effort: the process is ending
    }
  }
  uninstall();
}

/** The temporary name of `path` for this process: what `removeStaleTempFiles` later recognises. */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}`;
}

/** True when a process with this id exists (EPERM: it exists but belongs to another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const STALE = /\.(tmp|old)-(\d+)$/;

/** The pid in a `.tmp-<pid>` / `.old-<pid>` name when that process is gone (and is not us), else null. */
function stalePid(name: string): number | null {
  const m = STALE.exec(name);
  if (!m) return null;
  const pid = Number(m[2]);
  return pid !== process.pid && !processAlive(pid) ? pid : null;
}

export interface StaleTempOptions {
  /** Only entries whose name starts with this (e.g. the output's own name, among its siblings). */
  prefix?: string;
  /** Look into subdirectories too (a run directory's checkpoints/, adapter/). */
  recursive?: boolean;
}

/**
 * Removes the `.tmp-<pid>` / `.old-<pid>` leftovers of moka processes that no longer exist from `dir`; returns the
 * removed paths. A directory that does not exist or cannot be read has nothing to clean. The pid must be dead, so a
 * run writing to the same place at the same time keeps its files.
 */
export async function removeStaleTempFiles(dir: string, opts: StaleTempOptions = {}): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const e of entries) {
    const path = join(dir, e.name);
    if ((opts.prefix === undefined || e.name.startsWith(opts.prefix)) && stalePid(e.name) !== null) {
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    } else if (opts.recursive && e.isDirectory()) {
      removed.push(...(await removeStaleTempFiles(path, { recursive: true })));
    }
  }
  return removed;
}

/**
 * A new directory in the OS temp directory, `<prefix><pid>-XXXXXX`, for scratch data that is not part of an output
 * (converted weights, an intermediate merge). Removed on SIGINT/SIGTERM/SIGHUP until `done` is called; the
 * leftovers of killed processes (SIGKILL) with the same prefix are removed first.
 */
export function makeScratchDir(prefix: string): { dir: string; done: () => void } {
  const parent = tmpdir();
  let entries: string[] = [];
  try {
    entries = readdirSync(parent);
  } catch {
    // an unreadable temp directory has nothing of ours to clean
  }
  for (const e of entries) {
    const m = e.startsWith(prefix) ? /^(\d+)-/.exec(e.slice(prefix.length)) : null;
    if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) removeNow(join(parent, e));
  }
  const dir = mkdtempSync(join(parent, `${prefix}${process.pid}-`));
  return { dir, done: removeOnInterrupt(dir) };
}
