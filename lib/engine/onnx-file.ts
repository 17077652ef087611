/**
 * Writes an emitted model to disk: `<name>.onnx`, plus its external weights file beside it when it has one.
 * The weights are written first and the model file last (each through a temporary name and a rename), so a
 * model file that exists is complete. A temporary file is removed on error and on SIGINT/SIGTERM/SIGHUP
 * (lib/output-cleanup.ts); filesystem errors carry the path they concern.
 */
import { closeSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { withFsPath } from '../errors.ts';
import { removeOnInterrupt, tempPathFor } from '../output-cleanup.ts';
import type { EmittedModel } from './emit.ts';

/** Writes `path` through `<path>.tmp-<pid>` and a rename; `write` fills the open file. */
function writeViaTemp(path: string, write: (fd: number) => void): void {
  const tmp = tempPathFor(path);
  const unregister = removeOnInterrupt(tmp);
  try {
    const fd = openSync(tmp, 'w');
    try {
      write(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw withFsPath(err, tmp);
  } finally {
    unregister();
  }
}

export function writeOnnxModel(path: string, emitted: EmittedModel): string[] {
  const written: string[] = [];
  const external = emitted.external;
  if (external) {
    if (external.links.length) {
      throw new Error(
        'internal: a model written to disk must copy its file-backed weights (copyFileWeights)',
      );
    }
    const target = join(dirname(path), external.location);
    writeViaTemp(target, (fd) => {
      for (const part of external.parts) writeSync(fd, part.bytes());
    });
    written.push(target);
  }
  writeViaTemp(path, (fd) => writeFileSync(fd, emitted.model));
  written.push(path);
  return written;
}
