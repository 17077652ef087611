// `moka generate` and `moka score` as a user runs them: output on a tiny checkpoint, one-line errors on broken ones.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { runMoka } from '../helpers/run-moka.ts';

let root: string;
let good: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-gen-cli-'));
  good = join(root, 'good');
  await writeTinyCheckpoint({ dir: good, seed: 4 });
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A copy of the good checkpoint with `breakIt` applied. */
async function broken(name: string, breakIt: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(root, name);
  await cp(good, dir, { recursive: true });
  await breakIt(dir);
  return dir;
}

function expectOneLineError(r: { code: number | null; stderr: string }, pattern: RegExp): void {
  expect(r.code).toBe(1);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^moka: error: /);
  expect(lines[0]).toMatch(pattern);
}

describe('moka generate / moka score', () => {
  it('generate prints the greedy continuation (the same with --json)', () => {
    const r = runMoka(['generate', '--model', good, '--prompt', 'The quick brown', '--max-new-tokens', '12']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = runMoka([
      'generate',
      '--model',
      good,
      '--prompt',
      'The quick brown',
      '--max-new-tokens',
      '12',
      '--json',
    ]);
    const out = JSON.parse(j.stdout);
    expect(out.tokens.length).toBeGreaterThan(0);
    expect(out.tokens.length).toBeLessThanOrEqual(12);
    expect(r.stdout).toBe(`${out.text}\n`);
  });

  it('score prints JSON with loglik, tokens and isGreedy per choice', () => {
    const r = runMoka([
      'score',
      '--model',
      good,
      '--context',
      'Question: What is the capital of France?\nAnswer:',
      '--choice',
      ' Paris',
      '--choice',
      ' London',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.choices).toHaveLength(2);
    expect(out.choices[0]).toMatchObject({ text: ' Paris', tokens: expect.any(Number), isGreedy: false });
    expect(out.choices[0].loglik).toBeLessThan(0);
    expect(out.choices[1].text).toBe(' London');
  });

  it('fails clearly on a missing directory', () => {
    expectOneLineError(
      runMoka(['generate', '--model', join(root, 'nope'), '--prompt', 'x']),
      /nope: no such directory/,
    );
  });

  it('fails clearly on a truncated safetensors file', async () => {
    const dir = await broken('truncated', async (d) => {
      const file = join(d, 'model.safetensors');
      const size = (await readFile(file)).byteLength;
      await truncate(file, size - 1000);
    });
    expectOneLineError(
      runMoka(['score', '--model', dir, '--context', 'a', '--choice', ' b']),
      /model\.safetensors: .*run past the end of the data/,
    );
  });

  it('fails clearly on a header that lies about a tensor size', async () => {
    const dir = await broken('lying-header', async (d) => {
      const file = join(d, 'model.safetensors');
      const bytes = await readFile(file);
      const n = Number(bytes.readBigUInt64LE(0));
      const header = bytes.subarray(8, 8 + n).toString('utf8');
      // Same header length, a different shape for the embedding: its byte range no longer fits it.
      const lie = header.replace('"shape":[512,64]', '"shape":[512,32]');
      expect(lie).not.toBe(header);
      bytes.write(lie, 8, 'utf8');
      await writeFile(file, bytes);
    });
    expectOneLineError(
      runMoka(['generate', '--model', dir, '--prompt', 'x']),
      /model\.safetensors: .*span \d+ bytes, but shape/,
    );
  });

  it('fails clearly when config.json and the weights disagree', async () => {
    const dir = await broken('mismatch', async (d) => {
      const cfg = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
      cfg.intermediate_size = 96;
      await writeFile(join(d, 'config.json'), JSON.stringify(cfg));
    });
    expectOneLineError(
      runMoka(['score', '--model', dir, '--context', 'a', '--choice', ' b']),
      /tensor shapes do not match config\.json: .*gate_proj.*intermediate_size=96/,
    );
  });

  it('rejects bad flags in one line', () => {
    expectOneLineError(runMoka(['score', '--model', good, '--context', 'a']), /at least one --choice/);
    expectOneLineError(
      runMoka(['generate', '--model', good, '--prompt', 'a', '--provider', 'tpu']),
      /--provider must be one of cpu, cuda, webgpu, auto/,
    );
    expectOneLineError(
      runMoka(['generate', '--model', good, '--prompt', 'a', '--top-p', '1.5']),
      /top-p must be in \(0, 1\]/,
    );
  });
});
