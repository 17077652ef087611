/** Runs the `moka` executable as a user would (a child process), returning its exit code and output. */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const mokaBin = fileURLToPath(new URL('../../bin/moka.js', import.meta.url));

export function runMoka(
  args: string[],
  opts: { cwd?: string; input?: string; env?: Record<string, string> } = {},
) {
  const r = spawnSync(process.execPath, [mokaBin, ...args], {
    encoding: 'utf8',
    cwd: opts.cwd,
    input: opts.input,
    env: { ...process.env, MOKA_DEBUG: '', ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
