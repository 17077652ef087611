/**
 * `initFrom`: a variant starts from an earlier run's adapter (what the S3-triggered retraining does). The held-out
 * loss before the first step of the new run equals the earlier run's loss after its last step (same model, data
 * and split; the same computation on the same weights), and an adapter of another configuration is refused.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { localPipelineDefinition } from '../../lib/infra/local-definition.ts';
import { runLocal } from '../../lib/pipeline/local-runner.ts';
import { FileStore } from '../../lib/pipeline/store/index.ts';
import { tinyRun } from './fixtures.ts';

const moka = { type: 'moka', targetModules: 'all-linear', plan: { count: 2 } } as const;

function evalLosses(path: string): number[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { evalLoss?: number })
    .filter((m) => m.evalLoss !== undefined)
    .map((m) => m.evalLoss!);
}

it('initFrom starts a variant from an earlier adapter, and refuses one of another configuration', async () => {
  const { dir, config } = await tinyRun(8, { adapters: [{ name: 'moka', ...moka }], evals: undefined });
  const store = new FileStore(join(dir, 'store'));
  const definition = localPipelineDefinition();
  const run = (runId: string, adapters: unknown) =>
    runLocal({
      definition,
      input: { ...config, runId, adapters },
      store,
      workDir: join(dir, 'work'),
      progress: 'none',
      log: () => {},
    });
  const variant = (runId: string) => join(store.root, 'runs', runId, 'variants', 'moka');

  expect((await run('first', [{ name: 'moka', ...moka }])).status).toBe('SUCCEEDED');
  const adapterDir = join(variant('first'), 'adapter');
  expect((await run('again', [{ name: 'moka', ...moka, initFrom: adapterDir }])).status).toBe('SUCCEEDED');
  const first = evalLosses(join(variant('first'), 'metrics.jsonl'));
  const again = evalLosses(join(variant('again'), 'metrics.jsonl'));
  expect(first[0]).toBeGreaterThan(first.at(-1)!); // training moved the weights
  // Same weights, same held-out batches: identical float computation, so equal to the last bit.
  expect(again[0]).toBe(first.at(-1));

  const refused = await run('mismatch', [
    { name: 'moka', ...moka, plan: { count: 3 }, initFrom: adapterDir },
  ]);
  expect(refused.status).toBe('FAILED');
  expect(JSON.parse(refused.error!.Cause).StatusReason).toMatch(
    /tensors differ from this run's moka adapter .*initializing from it needs the same adapter type, targets and shapes/,
  );
}, 120_000);
