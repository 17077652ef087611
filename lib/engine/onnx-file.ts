/**
 * Writes an emitted model to disk: `<name>.onnx`, plus its external weights file beside it when it has one.
 * The weights are written first and the model file last (each through a temporary name and a rename), so a
 * model file that exists is complete.
 */
import { closeSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { EmittedModel } from './emit.ts';

export function writeOnnxModel(path: string, emitted: EmittedModel): string[] {
  const written: string[] = [];
  if (emitted.external) {
    if (emitted.external.links.length) {
      throw new Error(
        'internal: a model written to disk must copy its file-backed weights (copyFileWeights)',
      );
    }
    const target = join(dirname(path), emitted.external.location);
    const tmp = `${target}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w');
    try {
      for (const part of emitted.external.parts) writeSync(fd, part.bytes());
    } catch (err) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      throw err;
    }
    closeSync(fd);
    renameSync(tmp, target);
    written.push(target);
  }
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, emitted.model);
  renameSync(tmp, path);
  written.push(path);
  return written;
}
