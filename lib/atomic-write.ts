/**
 * Atomic file writes, the one way moka writes a small file that must never be seen half-written (configs,
 * summaries, metrics, adapter files, store objects). It sits at the bottom of the layers so that any module
 * (including the Lambda bundles) can use it without importing the model's checkpoint code.
 */
import { open, rename, rm } from 'node:fs/promises';
import { withFsPath } from './errors.ts';
import { removeOnInterrupt, tempPathFor } from './output-cleanup.ts';

/**
 * Writes `text` to `path` via a temporary file (`<path>.tmp-<pid>`) and a rename, flushed first, so `path` is
 * never partial; the temporary file is removed on any error and on SIGINT/SIGTERM/SIGHUP (lib/output-cleanup.ts).
 * Filesystem errors carry the path they concern.
 */
export async function writeFileAtomic(path: string, text: string | Uint8Array): Promise<void> {
  const tmp = tempPathFor(path);
  const unregister = removeOnInterrupt(tmp);
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw withFsPath(err, tmp);
  } finally {
    unregister();
  }
}
