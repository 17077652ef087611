/**
 * `moka run CONFIG [--store URI]`: runs a whole pipeline locally. The pipeline stack is synthesized (lib/infra),
 * its state machine's ASL extracted, and executed by the local runner (lib/pipeline/local-runner.ts), each Task
 * state bound to the stage or handler it stands for: the same definition AWS runs. Artifacts go to
 * <store>/runs/<runId> (default ./runs/<runId>); running again with the same runId resumes the run.
 */
import type { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { UserError } from '../../lib/errors.ts';
import type { LocalRunResult } from '../../lib/pipeline/local-runner.ts';
import { RUN_ID_PATTERN, parseRunConfig } from '../../lib/pipeline/run-config.ts';
import { causeMessage } from '../../lib/pipeline/handlers.ts';
import { openStore } from '../../lib/pipeline/store/index.ts';
import type { ProgressMode } from '../../lib/train/progress.ts';
import { parseInteger, readJsonFile, parseProgressMode } from './cli-helpers.ts';

export interface RunPipelineOptions {
  configFile: string;
  store: string;
  runId?: string;
  jobs?: number;
  progress?: ProgressMode;
  log?: (line: string) => void;
}

/**
 * SIGINT/SIGTERM while a run executes: training finishes its step and checkpoints, the run fails, and running the
 * same runId again resumes it. A second signal exits at once (the checkpoints already in the store still count).
 */
function stopOnSignals(): { signal: AbortSignal; dispose: () => void } {
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (stop.signal.aborted) process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    process.stderr.write(
      `moka: ${sig}: stopping after the current training step (send it again to exit at once)\n`,
    );
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: stop.signal,
    dispose: () => {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    },
  };
}

/** Reads CONFIG, applies --run-id, runs the pipeline locally. Shared by `moka run` and `moka demo`. */
export async function runPipelineFromFile(opts: RunPipelineOptions): Promise<LocalRunResult> {
  const raw = readJsonFile(opts.configFile, 'run config');
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new UserError(`run config ${opts.configFile} must hold a JSON object`);
  }
  const input = { ...(raw as Record<string, unknown>), ...(opts.runId ? { runId: opts.runId } : {}) };
  // Schema problems are reported at once, before the stack is synthesized (ValidateRun checks again, with the
  // reachability of the store, model and data).
  parseRunConfig(input, `run config ${opts.configFile}`);
  const store = openStore(opts.store);
  // Loaded here, not at the top: aws-cdk-lib takes seconds to import, which no other command should pay.
  const { localPipelineDefinition } = await import('../../lib/infra/local-definition.ts');
  const { runLocal } = await import('../../lib/pipeline/local-runner.ts');
  const stop = stopOnSignals();
  try {
    return await runLocal({
      definition: localPipelineDefinition(),
      input,
      store,
      baseDir: dirname(resolve(opts.configFile)),
      ...(opts.jobs ? { jobs: opts.jobs } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(opts.log ? { log: opts.log } : {}),
      stopSignal: stop.signal,
    });
  } finally {
    stop.dispose();
  }
}

/** One line per failed run, saying how to resume. */
export function describeFailure(
  result: LocalRunResult,
  configFile: string,
  runId: string | undefined,
): string {
  const { message } = causeMessage(result.error?.Cause ?? '');
  const resume = runId
    ? `; fix the cause and run \`moka run ${configFile} --run-id ${runId}\` to resume`
    : '';
  return `the run failed: ${result.error?.Error ?? 'error'}: ${message}${resume}`;
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run the whole pipeline (quantize, train each variant, evaluate, report) locally')
    .argument('<config>', 'run config JSON (see `moka schema` and examples/)')
    .option(
      '--store <uri>',
      'artifact store root: a folder or s3://bucket/prefix (runs go to <store>/runs/<runId>)',
      '.',
    )
    .option('--run-id <id>', "run id (overrides the config's runId); the same id resumes a run")
    .option('--jobs <n>', 'stage jobs at once on this machine', '1')
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json or none', 'auto')
    .option('--json', 'print the execution output as JSON')
    .action(
      async (
        config: string,
        opts: { store: string; runId?: string; jobs: string; progress: string; json?: boolean },
      ) => {
        if (opts.runId !== undefined && !RUN_ID_PATTERN.test(opts.runId)) {
          throw new UserError(`--run-id must be 1-80 letters, digits, "_" or "-", got "${opts.runId}"`);
        }
        const progress = parseProgressMode(opts.progress);
        const result = await runPipelineFromFile({
          configFile: config,
          store: opts.store,
          ...(opts.runId ? { runId: opts.runId } : {}),
          jobs: parseInteger(opts.jobs, '--jobs', 1),
          progress,
        });
        if (result.status === 'FAILED') {
          throw new UserError(describeFailure(result, config, result.runId));
        }
        const out = result.output!;
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
          return;
        }
        process.stdout.write(
          `run ${out.runId} succeeded: ${out.runUri}\n` +
            Object.entries(out.adapterUris)
              .map(([v, u]) => `  adapter ${v}: ${u}\n`)
              .join('') +
            (out.reportUri ? `  report: ${out.reportUri}\n` : ''),
        );
      },
    );
}
