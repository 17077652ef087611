/** A tiny run for the pipeline tests: prepareDemo's model, data and task at the smallest useful size. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDemo } from '../../lib/pipeline/demo.ts';
import type { RunConfigInput } from '../../lib/pipeline/run-config.ts';

export interface TinyRun {
  dir: string;
  config: RunConfigInput;
}

/** One layer, hidden 32; `steps` optimizer steps with a checkpoint every 4. */
export async function tinyRun(steps = 12, overrides: Partial<RunConfigInput> = {}): Promise<TinyRun> {
  const dir = mkdtempSync(join(tmpdir(), 'moka-pipeline-'));
  const inputs = await prepareDemo({ dir: join(dir, 'inputs'), steps, hiddenSize: 32, numLayers: 1 });
  const config: RunConfigInput = {
    ...inputs.config,
    quantize: { format: 'nf4', blockSize: 32 },
    training: { ...(inputs.config.training as object), maxSteps: steps, checkpointEvery: 4, logEvery: 1000 },
    ...overrides,
  };
  return { dir, config };
}
