/**
 * The C++ test of the NF4 kernel (native/test/matmul-4bit-test.cc): each code path — the run-time dispatch,
 * the portable one, and AVX2 / AVX-512 where this CPU has them — against a float64 reference, per element
 * |y − ref| ≤ 1e-5 · Σ|x·w|, over odd shapes, blocks straddling rows, misaligned pointers and split column
 * ranges. The TypeScript tests (test/quant/matmul-4bit.test.ts) only reach the path the dispatch picks; this
 * one forces each, and also builds the portable-only variant that non-x86 machines compile.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const cxx = process.env.CXX ?? 'c++';

function buildAndRun(defines: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'moka-kernel-test-'));
  try {
    const exe = join(dir, 'matmul-4bit-test');
    execFileSync(
      cxx,
      [
        '-std=c++17',
        '-O2',
        ...defines,
        '-Inative',
        'native/matmul-4bit.cc',
        'native/test/matmul-4bit-test.cc',
        '-o',
        exe,
      ],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const r = spawnSync(exe, { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    return r.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('NF4 kernel, C++ test', () => {
  it('every code path matches the float64 reference (1e-5 · Σ|x·w| per element)', () => {
    const out = buildAndRun([]);
    expect(out).toMatch(/^PASS$/m);
    expect(out).toMatch(/^dispatch +\d+ checks +0 failures/m);
    expect(out).toMatch(/^scalar +\d+ checks +0 failures/m);
    if (process.arch === 'x64') expect(out).toMatch(/^avx2 +\d+ checks +0 failures/m);
  }, 120_000);

  it('the portable build (what non-x86 machines compile) passes too', () => {
    const out = buildAndRun(['-DMOKA_MATMUL4BIT_NO_AVX2']);
    expect(out).toMatch(/^PASS$/m);
    expect(out).toMatch(/^avx2 +skipped/m);
  }, 120_000);
});
