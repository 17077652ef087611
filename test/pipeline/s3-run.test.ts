/**
 * A whole local run with its store on S3 (s3rver on loopback): the stages upload checkpoints, adapters, evals and
 * the report, download the quantized model from the S3 cache, and the execution output names s3:// URIs.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { localPipelineDefinition } from '../../lib/infra/local-definition.ts';
import { runLocal } from '../../lib/pipeline/local-runner.ts';
import { S3Store, isComplete, readJson } from '../../lib/pipeline/store/index.ts';
import type { RunStatus } from '../../lib/pipeline/status.ts';
import { startS3rver, type LocalS3 } from '../helpers/s3rver.ts';
import { tinyRun } from './fixtures.ts';

let s3: LocalS3;
beforeAll(async () => {
  s3 = await startS3rver(['artifacts']);
});
afterAll(async () => {
  await s3?.close();
});

it('runs the pipeline with an s3:// store', async () => {
  const { dir, config } = await tinyRun(8, {
    adapters: [{ name: 'moka', type: 'moka', targetModules: 'all-linear', plan: { count: 2 } }],
  });
  const storeOptions = { s3: s3.options() };
  const store = new S3Store('s3://artifacts/moka', s3.options());
  const result = await runLocal({
    definition: localPipelineDefinition(),
    input: { ...config, runId: 'on-s3' },
    store,
    storeOptions,
    workDir: join(dir, 'work'),
    progress: 'none',
    log: () => {},
  });
  expect(result.error).toBeUndefined();
  expect(result.status).toBe('SUCCEEDED');
  expect(result.output).toMatchObject({
    runUri: 's3://artifacts/moka/runs/on-s3',
    adapterUris: { moka: 's3://artifacts/moka/runs/on-s3/variants/moka/adapter' },
    reportUri: 's3://artifacts/moka/runs/on-s3/report/report.html',
  });
  const status = await readJson<RunStatus>(store, 'runs/on-s3/status.json');
  expect(status!.status).toBe('SUCCEEDED');
  for (const prefix of [
    'runs/on-s3/variants/moka/adapter',
    'runs/on-s3/variants/moka/checkpoints/step-8',
    'runs/on-s3/variants/moka/evals',
    'runs/on-s3/base/evals',
    'runs/on-s3/report',
  ]) {
    expect(await isComplete(store, prefix), prefix).toBe(true);
  }
  expect((await store.list('cache/quantized')).some((o) => o.key.endsWith('/model.safetensors'))).toBe(true);
}, 120_000);
