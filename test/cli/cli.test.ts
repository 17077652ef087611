// The `moka` executable as a user runs it: help, unknown commands, and a working subcommand.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const mokaBin = fileURLToPath(new URL('../../bin/moka.js', import.meta.url));

export function runMoka(args: string[], opts: { cwd?: string; input?: string } = {}) {
  const r = spawnSync(process.execPath, [mokaBin, ...args], {
    encoding: 'utf8',
    cwd: opts.cwd,
    input: opts.input,
    env: { ...process.env, MOKA_DEBUG: '' },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('moka CLI', () => {
  it('--help lists the commands and exits 0', () => {
    const r = runMoka(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: moka');
    expect(r.stdout).toContain('doctor');
  });

  it('an unknown command exits non-zero with a one-line message', () => {
    const r = runMoka(['nosuchcommand']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')[0]).toMatch(/unknown command 'nosuchcommand'/);
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/);
  });

  it('doctor --json reports the CPU provider as bundled', () => {
    const r = runMoka(['doctor', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.providers).toContainEqual({ name: 'cpu', bundled: true });
  });
});
