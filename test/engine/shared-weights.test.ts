/**
 * Weights that sit in files are mapped once per process by moka's native addon and shared by its sessions
 * (native/shared-weights.cc), instead of ORT mapping them again for each session.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph, Session } from '../../lib/engine/index.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import { NativeSession, nativeKernels } from '../../lib/engine/native-session.ts';
import { quantizeNf4 } from '../../lib/quant/nf4.ts';
import { quantizedLinear, quantizedWeightTensors } from '../../lib/quant/quantized-linear.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'moka-shared-weights-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Lines of /proc/self/maps that map `path` (Linux). */
const mappingsOf = (path: string) =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.endsWith(` ${path}`));

describe('weights shared between native sessions', () => {
  // Linux only: it reads the process's mappings from /proc.
  it.runIf(process.platform === 'linux')(
    'two sessions read a file weight through one mapping, gone with the last session, with the inline result',
    async () => {
      expect(nativeKernels()).not.toBeNull(); // npm test builds the addon first
      const [n, k] = [256, 512];
      const rand = seededRandom(7);
      const w = quantizeNf4(Float32Array.from(randomNormal(n * k, rand, 0.1)), [n, k], { blockSize: 64 });
      // The packed bytes 8 bytes into a file, as a weight sits in a safetensors shard.
      const file = join(dir, 'shard.bin');
      writeFileSync(file, Buffer.concat([Buffer.alloc(8), Buffer.from(w.packed)]));
      const g = new Graph('shared');
      const x = g.input('x', 'float32', [1, k]);
      const weight = quantizedWeightTensors(g, 'w', w, { file, offset: 8, length: w.packed.length });
      const spec = { inputs: [x], outputs: { y: quantizedLinear(x, weight) } };
      const xs = Float32Array.from(randomNormal(k, rand));

      const inline = new Session(g, spec);
      const expected = (await inline.run({ x: xs })).y!.data as Float32Array;
      await inline.release();
      expect(mappingsOf(file)).toEqual([]); // an inline model reads the bytes into itself

      // External weights (any total above 1 KiB): both sessions reference the file where it is.
      const a = new Session(g, spec, { externalDataTotalBytes: 1024 });
      const b = new Session(g, spec, { externalDataTotalBytes: 1024 });
      expect(a.emit(new Map()).external!.inPlace.map((t) => t.file)).toEqual([file]);
      for (const s of [a, b]) {
        const y = (await s.run({ x: xs })).y!.data as Float32Array;
        expect(Buffer.from(y.buffer)).toEqual(Buffer.from(expected.buffer));
      }
      expect(mappingsOf(file)).toHaveLength(1);
      await a.release();
      expect(mappingsOf(file)).toHaveLength(1); // b still reads it
      await b.release();
      expect(mappingsOf(file)).toEqual([]);
    },
  );

  it('a shared weight that is missing or outside its file is an error that names it', async () => {
    const g = new Graph('bad-shared');
    const x = g.input('x', 'float32', [1, 4]);
    const model = new Session(g, { inputs: [x], outputs: { y: x } }).emit(new Map()).model;
    const file = join(dir, 'small.bin');
    writeFileSync(file, Buffer.alloc(16));
    const create = (path: string, length: number) =>
      NativeSession.create(model, {
        graphOptimizationLevel: 99,
        logSeverityLevel: 4,
        memArena: 1,
        config: [],
        sharedInitializers: [
          { name: 'w', file: path, offset: 8, length, elementType: 1, dims: [length / 4] },
        ],
      });
    await expect(create(join(dir, 'absent.bin'), 8)).rejects.toThrow(/cannot open weight file .*absent\.bin/);
    await expect(create(file, 16)).rejects.toThrow(
      /initializer w: bytes \[8, \+16\) lie outside .*small\.bin/,
    );
    if (process.platform === 'linux') expect(mappingsOf(file)).toEqual([]); // a failed session maps nothing
  });
});
