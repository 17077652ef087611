/**
 * The container contract of `moka stage train`: on SIGTERM (a Batch timeout or spot reclaim) it finishes the
 * step, uploads a checkpoint and exits 143, so Batch retries the job; the retry resumes from that checkpoint.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { validateRunInput } from '../../lib/pipeline/handlers.ts';
import { trainStage, storedCheckpointSteps } from '../../lib/pipeline/stages/index.ts';
import { readStatus } from '../../lib/pipeline/status.ts';
import { FileStore } from '../../lib/pipeline/store/index.ts';
import { tinyRun } from './fixtures.ts';

const mokaBin = fileURLToPath(new URL('../../bin/moka.js', import.meta.url));

it('moka stage train checkpoints and exits 143 on SIGTERM, and the retried job resumes', async () => {
  const { dir, config } = await tinyRun(400, {
    adapters: [{ name: 'moka', type: 'moka', targetModules: 'all-linear', plan: { count: 2 } }],
    quantize: false,
    evals: undefined,
  });
  const store = new FileStore(join(dir, 'store'));
  const plan = await validateRunInput({ ...config, runId: 'sig' }, { store });
  const ckpts = 'runs/sig/variants/moka/checkpoints';

  const child = spawn(
    process.execPath,
    [mokaBin, 'stage', 'train', '--run', plan.runUri, '--variant', 'moka', '--progress', 'none'],
    {
      env: { ...process.env, MOKA_WORK_DIR: join(dir, 'work-1') },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const end = Date.now() + 90_000;
  while (!existsSync(join(store.root, ckpts, 'step-4', '_COMPLETE'))) {
    if (Date.now() > end) throw new Error(`no checkpoint in the store: ${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGTERM');
  expect(await exited, stderr).toBe(143);
  expect(stderr).toMatch(/training of moka stopped at step \d+ of 400 .*run the stage again to resume/);
  const steps = await storedCheckpointSteps(store, ckpts);
  const stoppedAt = steps.at(-1)!;
  expect(stoppedAt).toBeGreaterThanOrEqual(4);
  expect(stoppedAt).toBeLessThan(400);
  expect(existsSync(join(store.root, 'runs/sig/variants/moka/adapter/_COMPLETE'))).toBe(false);
  expect((await readStatus(store, 'sig'))!.stages['train:moka']!.status).toBe('FAILED');

  const retried = await trainStage({
    runUri: plan.runUri,
    variant: 'moka',
    workDir: join(dir, 'work-2'),
    progress: 'none',
    log: () => {},
  });
  expect(retried.status).toBe('SUCCEEDED');
  expect(retried.result!.resumedFrom).toBe(stoppedAt);
  expect(retried.result!.step).toBe(400);
  expect((await readStatus(store, 'sig'))!.stages['train:moka']!.status).toBe('SUCCEEDED');
}, 150_000);
