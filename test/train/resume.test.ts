/**
 * Exact resume across real process deaths: a training child process is SIGKILLed at an arbitrary step, killed
 * again in the middle of a checkpoint write, stopped with SIGTERM, and finally resumed to the end. Its final
 * parameters and loss curve must be bit-identical to an uninterrupted run with the same seed (in this process).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../lib/model/safetensors.ts';
import { COMPLETE_MARKER } from '../../lib/train/checkpoints.ts';
import { fixtureRun } from './fixtures/setup.ts';
import { bitIdentical, metricsWithoutTiming } from './helpers.ts';

const script = fileURLToPath(new URL('./fixtures/train-run.ts', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'moka-resume-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function start(dir: string, env: Record<string, string>) {
  // node --import tsx (not npx tsx): the pid we signal is the training process itself.
  const child = spawn(process.execPath, ['--import', 'tsx', script, dir], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<Exit>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, exited };
}

/** Polls for a file; fails (with the child's output) if the child exits first. */
async function waitFor(path: string, run: ReturnType<typeof start>): Promise<void> {
  let exit: Exit | null = null;
  void run.exited.then((e) => (exit = e));
  while (!existsSync(path)) {
    if (exit) throw new Error(`the child exited before ${path} appeared: ${JSON.stringify(exit)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function readAdapter(path: string): Promise<Map<string, Float32Array>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, Float32Array>();
    for (const name of f.names()) out.set(name, Float32Array.from(await f.readFloat32(name)));
    return out;
  } finally {
    await f.close();
  }
}

describe('exact resume across process deaths', () => {
  it('SIGKILL at a step, SIGKILL during a checkpoint write, SIGTERM, resume: bit-identical to an uninterrupted run', async () => {
    const refDir = join(root, 'reference');
    const reference = await fixtureRun({ outputDir: refDir });
    const dir = join(root, 'interrupted');
    const ckpt = (step: number) => join(dir, 'checkpoints', `step-${step}`);

    // 1. Killed outright somewhere after the step-8 checkpoint.
    const first = start(dir, { DELAY_MS: '20' });
    await waitFor(join(ckpt(8), COMPLETE_MARKER), first);
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    // 2. Resumed, then killed between two files of the step-16 checkpoint (adapter and optimizer written).
    const second = await start(dir, { CRASH_AT: '16:optimizer.safetensors' }).exited;
    expect(second.signal).toBe('SIGKILL');
    expect(second.stderr).toMatch(/"event":"train.start".*"resumedFrom":(8|12)/);
    expect(readdirSync(ckpt(16)).sort()).toEqual(['adapter.safetensors', 'optimizer.safetensors']);

    // 3. Resumed from step 12 (step 16 is incomplete), then stopped cleanly with SIGTERM after step 20.
    const third = start(dir, { DELAY_MS: '20' });
    await waitFor(join(ckpt(20), COMPLETE_MARKER), third);
    third.child.kill('SIGTERM');
    const stopped = await third.exited;
    expect(stopped.code).toBe(143);
    expect(stopped.stderr).toMatch(/"event":"train.start".*"resumedFrom":12/);
    expect(stopped.stderr).toMatch(/"event":"train.signal","signal":"SIGTERM"/);
    const stop = JSON.parse(stopped.stdout) as { stoppedBy: string; step: number };
    expect(stop.stoppedBy).toBe('signal');
    expect(stop.step).toBeGreaterThanOrEqual(20);
    expect(existsSync(join(ckpt(stop.step), COMPLETE_MARKER))).toBe(true);

    // 4. Resumed to the end.
    const last = await start(dir, {}).exited;
    expect(last.code).toBe(0);
    expect(JSON.parse(last.stdout)).toEqual({ stoppedBy: 'completed', step: 30, resumedFrom: stop.step });

    const params = await readAdapter(join(ckpt(30), 'adapter.safetensors'));
    expect(bitIdentical(params, reference.params)).toBe(true);
    expect(metricsWithoutTiming(join(dir, 'metrics.jsonl'))).toEqual(
      metricsWithoutTiming(join(refDir, 'metrics.jsonl')),
    );
    expect(metricsWithoutTiming(join(ckpt(30), 'metrics.jsonl'))).toEqual(
      metricsWithoutTiming(join(refDir, 'metrics.jsonl')),
    );
  });
});
