/**
 * The state machine the deployable stack deploys, executed locally end to end by the pipeline's runner, with its
 * Batch tasks bound to the local stages (quantize, train, eval, report) and its Lambda tasks to the handlers: a
 * tiny generated model, a few training steps, two variants.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployablePipelineDefinition } from '../../lib/infra/deployable-definition.ts';
import { prepareDemo, type DemoInputs } from '../../lib/pipeline/demo.ts';
import { runLocal } from '../../lib/pipeline/local-runner.ts';
import { STATE_NAMES } from '../../lib/pipeline/state-names.ts';
import { openStore } from '../../lib/pipeline/store/index.ts';

let dir: string;
let demo: DemoInputs;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'moka-deployable-run-'));
  demo = await prepareDemo({ dir, steps: 4, hiddenSize: 32, numLayers: 1 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the deployable state machine, run locally', () => {
  it('runs quantize → train + eval per variant and the base → report → finalize, on this stack’s Batch resources', async () => {
    const definition = deployablePipelineDefinition();
    // It is the deployable stack's definition: Batch tasks name this stack's queue and stage job definitions.
    const quantize = (definition.States as Record<string, { Parameters: Record<string, string> }>)[
      STATE_NAMES.quantize
    ]!;
    expect(quantize.Parameters.JobQueue).toMatch(/:job-queue\/ComputeJobQueue/);
    expect(quantize.Parameters.JobDefinition).toMatch(/:job-definition\/StagesquantizeJob/);

    const lines: string[] = [];
    const result = await runLocal({
      definition,
      input: { ...demo.config, runId: 'deployable-e2e' },
      store: openStore(join(dir, 'store')),
      workDir: join(dir, 'work'),
      progress: 'none',
      log: (l) => lines.push(l),
    });
    expect(result.error).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    for (const state of [
      STATE_NAMES.validate,
      STATE_NAMES.quantize,
      STATE_NAMES.train,
      STATE_NAMES.evaluate,
      STATE_NAMES.evaluateBase,
      STATE_NAMES.report,
      STATE_NAMES.finalize,
    ]) {
      expect(result.transitions).toContain(state);
    }
    expect(result.transitions.filter((t) => t === STATE_NAMES.train)).toHaveLength(2); // moka and lora
    const out = result.output!;
    expect(Object.keys(out.adapterUris).sort()).toEqual(['lora', 'moka']);
    for (const uri of Object.values(out.adapterUris))
      expect(existsSync(join(new URL(uri).pathname, 'adapter_config.json'))).toBe(true);
    expect(out.reportUri).toMatch(/report\.html$/);
    expect(existsSync(new URL(out.reportUri!).pathname)).toBe(true);
    expect(Object.keys(out.metrics).sort()).toEqual(['base', 'lora', 'moka']);
  });
});
