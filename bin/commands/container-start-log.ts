/**
 * In the GPU task image (MOKA_CONTAINER=1), `moka stage` first logs one JSON line saying which execution
 * provider the stage will get and why (lib/engine/provider-choice.ts), with the runId, stage, variant and Batch
 * job attempt. `moka logs` also finds a running job's log stream by the runId in this line.
 */
import type { Command } from 'commander';
import { chooseExecutionProvider, probeGpus } from '../../lib/engine/provider-choice.ts';
import type { ProviderChoice } from '../../lib/engine/session.ts';
import { jsonLogger, type JsonLogger } from '../../lib/pipeline/json-log.ts';
import { openRun, runKeys } from '../../lib/pipeline/run-layout.ts';
import { readJson } from '../../lib/pipeline/store/index.ts';

/** Logs the provider decision of a stage about to run `runUri` (the run's config.json names the requested one). */
export async function logContainerStart(
  args: { stage: string; runUri: string; variant?: string },
  log: JsonLogger = jsonLogger((line) => process.stderr.write(line)),
): Promise<void> {
  const fields = {
    stage: args.stage,
    variant: args.variant,
    runUri: args.runUri,
    jobId: process.env.AWS_BATCH_JOB_ID,
    attempt: process.env.AWS_BATCH_JOB_ATTEMPT ? Number(process.env.AWS_BATCH_JOB_ATTEMPT) : undefined,
  };
  let requested: ProviderChoice = 'cpu';
  let runId: string | undefined;
  try {
    const run = openRun(args.runUri);
    runId = run.runId;
    const config = await readJson<{ compute?: { provider?: ProviderChoice } }>(
      run.store,
      runKeys(run.runId).config,
    );
    requested = config?.compute?.provider ?? 'cpu';
  } catch (err) {
    // The stage itself reports a bad run URI or an unreadable config; this line only must not hide that.
    log('warn', 'run config not readable at container start', { ...fields, runId, error: err as Error });
  }
  const decision = chooseExecutionProvider(requested, probeGpus());
  log(decision.warning ? 'warn' : 'info', `execution provider: ${decision.provider}`, {
    ...fields,
    runId,
    ...decision,
  });
}

/** Registers the start log as a hook of the `stage` command when running in the task image. */
export function registerContainerStartLog(program: Command): void {
  if (process.env.MOKA_CONTAINER !== '1') return;
  program.hook('preAction', async (_program, action) => {
    if (action.name() !== 'stage') return;
    const opts = action.opts<{ run?: string; variant?: string }>();
    if (!opts.run) return;
    await logContainerStart({ stage: String(action.args[0]), runUri: opts.run, variant: opts.variant });
  });
}
