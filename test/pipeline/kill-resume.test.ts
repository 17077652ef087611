/**
 * Kill and resume: `moka run` is killed with SIGKILL (no chance to clean up) once the store holds a training
 * checkpoint; running the same runId again restores the newest complete checkpoint from the store and ends with
 * an adapter byte-identical to an uninterrupted run's (CPU, one intra-op thread: bit-reproducible training).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { localPipelineDefinition } from '../../lib/infra/local-definition.ts';
import { runLocal } from '../../lib/pipeline/local-runner.ts';
import type { RunStatus } from '../../lib/pipeline/status.ts';
import { FileStore } from '../../lib/pipeline/store/index.ts';
import { metricsWithoutTiming } from '../train/helpers.ts';
import { tinyRun } from './fixtures.ts';

const mokaBin = fileURLToPath(new URL('../../bin/moka.js', import.meta.url));
const STEPS = 60;

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for a checkpoint in the store');
    await new Promise((r) => setTimeout(r, 20));
  }
}

it('a run killed during training resumes from the stored checkpoint and ends with the uninterrupted adapter', async () => {
  const { dir, config } = await tinyRun(STEPS, {
    adapters: [{ name: 'moka', type: 'moka', targetModules: 'all-linear', plan: { count: 2 } }],
    evals: undefined,
  });
  const store = new FileStore(join(dir, 'store'));
  const configFile = join(dir, 'run.json');
  writeFileSync(configFile, JSON.stringify(config));
  const variantDir = (runId: string) => join(store.root, 'runs', runId, 'variants', 'moka');

  // 1. The killed run: a separate process, SIGKILLed once the first checkpoint is complete in the store.
  const child = spawn(
    process.execPath,
    [mokaBin, 'run', configFile, '--store', store.root, '--run-id', 'killed', '--progress', 'none'],
    {
      env: { ...process.env, MOKA_WORK_DIR: join(dir, 'work-killed') },
      stdio: 'ignore',
    },
  );
  const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_code, signal) => r(signal)));
  await waitFor(() => existsSync(join(variantDir('killed'), 'checkpoints', 'step-4', '_COMPLETE')), 90_000);
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  expect(existsSync(join(variantDir('killed'), 'adapter', '_COMPLETE'))).toBe(false);

  // 2. Re-run the same runId (another work folder: the store is the only state carried over).
  const definition = localPipelineDefinition();
  const resumed = await runLocal({
    definition,
    input: { ...config, runId: 'killed' },
    store,
    workDir: join(dir, 'work-resume'),
    progress: 'none',
    log: () => {},
  });
  expect(resumed.status).toBe('SUCCEEDED');
  const status = JSON.parse(
    readFileSync(join(store.root, 'runs', 'killed', 'status.json'), 'utf8'),
  ) as RunStatus;
  const train = status.stages['train:moka']!;
  const resumedFrom = train.result!.resumedFrom as number;
  expect(resumedFrom).toBeGreaterThanOrEqual(4);
  expect(resumedFrom).toBeLessThan(STEPS);
  expect(resumedFrom % 4).toBe(0);
  expect(train.detail).toBe(`resumed from step ${resumedFrom}`);

  // 3. An uninterrupted run of the same config.
  const straight = await runLocal({
    definition,
    input: { ...config, runId: 'straight' },
    store,
    workDir: join(dir, 'work-straight'),
    progress: 'none',
    log: () => {},
  });
  expect(straight.status).toBe('SUCCEEDED');
  const weights = (runId: string) =>
    readFileSync(join(variantDir(runId), 'adapter', 'adapter_model.safetensors'));
  expect(weights('killed').equals(weights('straight'))).toBe(true);
  expect(metricsWithoutTiming(join(variantDir('killed'), 'metrics.jsonl'))).toEqual(
    metricsWithoutTiming(join(variantDir('straight'), 'metrics.jsonl')),
  );
}, 180_000);
