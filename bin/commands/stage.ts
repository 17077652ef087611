/**
 * `moka stage quantize|train|eval|report --run URI [--variant NAME]`: one stage of a run, the code a pipeline
 * container runs (its job definition's command). Exit codes: 0 done or skipped; 42
 * (DETERMINISTIC_FAILURE_EXIT_CODE) for a failure retrying cannot fix (bad config, data, missing input), which the
 * Batch retry strategy EXITs on; 143 after SIGTERM (training checkpointed: retry to resume); 1 otherwise.
 */
import type { Command } from 'commander';
import { constants } from 'node:os';
import { parseProgressMode } from './cli-helpers.ts';
import { UserError, isUserError } from '../../lib/errors.ts';
import { STAGES, StageInterruptedError } from '../../lib/pipeline/stages/index.ts';
import {
  DETERMINISTIC_FAILURE_EXIT_CODE,
  STAGE_NAMES,
  type StageName,
} from '../../lib/pipeline/state-names.ts';

export function registerStage(program: Command): void {
  program
    .command('stage')
    .description('run one pipeline stage of a run (what the pipeline containers run)')
    .argument('<stage>', `one of ${STAGE_NAMES.join(', ')}`)
    .requiredOption('--run <uri>', 'the run: <store>/runs/<runId> (a folder or s3://bucket/runs/<runId>)')
    .option('--variant <name>', 'the adapter variant (train, eval); "base" evaluates the un-adapted model')
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json or none', 'auto')
    .action(async (stage: string, opts: { run: string; variant?: string; progress: string }) => {
      if (!STAGE_NAMES.includes(stage as StageName)) {
        throw new UserError(`unknown stage "${stage}"; give one of ${STAGE_NAMES.join(', ')}`);
      }
      const progress = parseProgressMode(opts.progress);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      // `on`, not `once`: a once-listener is removed before it runs, so lib/output-cleanup.ts would then see no
      // other owner of the signal and end the process by the signal (no checkpoint, no exit 143).
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      try {
        const out = await STAGES[stage as StageName]({
          runUri: opts.run,
          ...(opts.variant ? { variant: opts.variant } : {}),
          progress,
          stopSignal: stop.signal,
        });
        process.stdout.write(`${JSON.stringify(out)}\n`);
      } catch (err) {
        if (err instanceof StageInterruptedError) {
          process.stderr.write(`moka: ${err.message}\n`);
          process.exit(128 + constants.signals.SIGTERM);
        }
        if (isUserError(err)) {
          process.stderr.write(`moka: error: ${err.message}\n`);
          process.exit(DETERMINISTIC_FAILURE_EXIT_CODE);
        }
        throw err;
      } finally {
        process.removeListener('SIGTERM', onSignal);
        process.removeListener('SIGINT', onSignal);
      }
    });
}
