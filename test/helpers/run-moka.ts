/** Runs the `moka` executable as a user would (a child process), returning its exit code and output. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const mokaBin = fileURLToPath(new URL('../../bin/moka.js', import.meta.url));

export function runMoka(
  args: string[],
  opts: { cwd?: string; input?: string; env?: Record<string, string>; timeoutMs?: number } = {},
) {
  const r = spawnSync(process.execPath, [mokaBin, ...args], {
    encoding: 'utf8',
    cwd: opts.cwd,
    input: opts.input,
    env: { ...process.env, MOKA_DEBUG: '', ...opts.env },
    ...(opts.timeoutMs ? { timeout: opts.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `moka` without waiting (node itself runs it, so a signal sent to the child reaches moka directly). */
export function startMoka(args: string[], opts: { env?: Record<string, string> } = {}): ChildProcess {
  return spawn(process.execPath, [mokaBin, ...args], {
    env: { ...process.env, MOKA_DEBUG: '', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
