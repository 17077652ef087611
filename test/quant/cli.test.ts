// `moka quantize` and `moka dequantize` as a user runs them: JSON summary on stdout, JSON-lines progress on
// stderr when not on a terminal, one-line errors with exit code 1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { parseByteSize } from '../../bin/commands/quantize.ts';
import { runMoka as moka } from '../helpers/run-moka.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-quant-cli-'));
  await writeTinyCheckpoint({ dir: join(root, 'model'), seed: 5, dtype: 'float16' });
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('moka quantize / dequantize', () => {
  it('quantizes with --json, reports progress as JSON lines on stderr, and dequantizes back', () => {
    const q = moka([
      'quantize',
      '--model',
      join(root, 'model'),
      '--out',
      join(root, 'q'),
      '--format',
      'int4',
      '--json',
    ]);
    expect(q.code).toBe(0);
    const summary = JSON.parse(q.stdout);
    expect(summary.kind).toBe('moka.quantize-summary');
    expect(summary.totals.quantizedWeights).toBe(14);
    const lines = q.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      event: 'progress',
      command: 'quantize',
      phase: 'quantize',
    });

    const d = moka(['dequantize', '--model', join(root, 'q'), '--out', join(root, 'd'), '--dtype', 'bf16']);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(/dequantized 14 int4 weights \(21 tensors, BF16\)/);
  });

  it('fails with one line and exit code 1 on bad input, leaving no output', async () => {
    const r = moka([
      'quantize',
      '--model',
      join(root, 'model'),
      '--out',
      join(root, 'bad'),
      '--block-size',
      '100',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      'moka: error: --block-size 100 is not supported for nf4: use a power of two among 32, 64, 128, 256, 512, 1024, 2048, 4096',
    );
    const notQuantized = moka(['dequantize', '--model', join(root, 'model'), '--out', join(root, 'bad')]);
    expect(notQuantized.code).toBe(1);
    expect(notQuantized.stderr).toMatch(
      /moka: error: .*has no quantization_config, so this is not a quantized model/,
    );
    expect((await readdir(root)).filter((e) => e.startsWith('bad'))).toEqual([]);
  });

  it('parses --max-shard-size', () => {
    expect(parseByteSize('5GB', '--max-shard-size')).toBe(5e9);
    expect(parseByteSize('512MiB', '--max-shard-size')).toBe(512 * 1024 ** 2);
    expect(() => parseByteSize('lots', '--max-shard-size')).toThrow(/size like 5GB/);
  });
});
