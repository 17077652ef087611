/**
 * A tiny random LLaMA checkpoint quantized to NF4 with double quantization (block 64) and opened as a frozen
 * base, in a temporary folder of its own: what the NF4 kernel and memory tests run on.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyCheckpoint, type TinyCheckpointOptions } from '../../lib/model/tiny-checkpoint.ts';
import { openFrozenBase, type FrozenBase } from '../../lib/quant/frozen-base.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';

export interface TinyNf4Base {
  base: FrozenBase;
  /** The temporary folder (the float checkpoint in f32/, the NF4 one in nf4/); other files may go beside them. */
  root: string;
  /** Closes the base and removes the folder. */
  close(): Promise<void>;
}

/** Writes the checkpoint (`options` as for writeTinyCheckpoint, less `dir`), quantizes and opens it. */
export async function openTinyNf4Base(
  prefix: string,
  options: Omit<TinyCheckpointOptions, 'dir'>,
): Promise<TinyNf4Base> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  try {
    await writeTinyCheckpoint({ dir: join(root, 'f32'), ...options });
    await quantizeCheckpoint({
      modelDir: join(root, 'f32'),
      outDir: join(root, 'nf4'),
      format: 'nf4',
      blockSize: 64,
      doubleQuant: true,
    });
    const base = await openFrozenBase(join(root, 'nf4'));
    return {
      base,
      root,
      close: async () => {
        await base.close();
        rmSync(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}
