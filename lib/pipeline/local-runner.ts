/**
 * Runs the pipeline's state machine definition (ASL, as synthesized by CDK and extracted by lib/infra/asl.ts) on
 * this machine with aws-local-stepfunctions: the real Choice, Map, Parallel, Retry and Catch semantics, with
 * every Task state bound by its name (state-names.ts) to the code it stands for: the validate and finalize
 * handlers, and the four stages for the Batch jobs. A Task state without a binding is refused before anything
 * runs, so a local run never calls AWS.
 *
 * A Batch task's binding receives what Batch would (the rendered Parameters: runUri, variant) and, like a failed
 * `.sync` job, fails with `States.TaskFailed` and a job description as the cause. Re-running the same runId
 * resumes the run: validate accepts the same config, and every stage skips work whose marker exists.
 */
import { StateMachine } from 'aws-local-stepfunctions';
import { UserError, isUserError } from '../errors.ts';
import {
  finalizeRun,
  validateRunInput,
  type PipelineDeps,
  type RunPlan,
  type RunSummary,
} from './handlers.ts';
import { STAGES, type StageOutcome, type TrainStageOptions } from './stages/index.ts';
import {
  BATCH_STATE_STAGES,
  DETERMINISTIC_FAILURE_EXIT_CODE,
  STATE_NAMES,
  type StageName,
} from './state-names.ts';
import type { ArtifactStore, OpenStoreOptions } from './store/index.ts';

// aws-local-stepfunctions 3.x uses Promise.withResolvers (Node 22); Node 20 lacks it. Same semantics as the spec.
const P = Promise as unknown as { withResolvers?: () => unknown };
P.withResolvers ??= function withResolvers<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
};

type StageFn = (opts: TrainStageOptions) => Promise<StageOutcome>;

export interface LocalRunOptions {
  /** The ASL definition (extractStateMachineDefinition of a stack holding one PipelineStateMachine). */
  definition: Record<string, unknown>;
  /** The execution input: a run config (or {configUri}). */
  input: unknown;
  /** The store root runs are written under. */
  store: ArtifactStore;
  storeOptions?: OpenStoreOptions;
  /** Relative paths of the config resolve against this folder. */
  baseDir?: string;
  workDir?: string;
  progress?: 'auto' | 'bar' | 'json' | 'none';
  /** State transitions and stage lines (default: stderr). */
  log?: (line: string) => void;
  /** Batch jobs run at once on this machine (default 1: stages share the CPU anyway). */
  jobs?: number;
  /** Replaces stages (tests inject failures). */
  stages?: Partial<Record<StageName, StageFn>>;
  /** Passed to the train stage (test hook). */
  afterCheckpointSync?: (step: number) => void | Promise<void>;
  /**
   * Stops the run: training checkpoints and stops, queued stages do not start, the execution fails; re-running
   * the runId resumes it. A failing stage does the same to the others.
   */
  stopSignal?: AbortSignal;
}

export interface LocalRunResult {
  status: 'SUCCEEDED' | 'FAILED';
  /** The execution output (Finalize's summary), or null when it failed. */
  output: RunSummary | null;
  /** The execution's error (the failed stage's error and cause). */
  error?: { Error: string; Cause: string };
  /** Names of the states entered, in order (Map iterations and Parallel branches interleave). */
  transitions: string[];
  /** The run (known once ValidateRun succeeded). */
  runId?: string;
  runUri?: string;
}

/** Every Task state of a definition, Map and Parallel bodies included: [name, state]. */
export function taskStates(def: Record<string, unknown>): [string, Record<string, unknown>][] {
  const out: [string, Record<string, unknown>][] = [];
  const walk = (d: Record<string, unknown>) => {
    for (const [name, s] of Object.entries((d.States ?? {}) as Record<string, Record<string, unknown>>)) {
      if (s.Type === 'Task') out.push([name, s]);
      const inner = (s.ItemProcessor ?? s.Iterator) as Record<string, unknown> | undefined;
      if (inner) walk(inner);
      for (const b of (s.Branches ?? []) as Record<string, unknown>[]) walk(b);
    }
  };
  walk(def);
  return out;
}

/** A counting semaphore: at most `n` bodies at once. */
function limiter(n: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(body: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((r) => waiting.push(r));
    active++;
    try {
      return await body();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** What a failed `.sync` job raises: States.TaskFailed with a job description as the cause. */
function taskFailed(jobName: string, err: unknown): Error {
  const e = new Error(
    JSON.stringify({
      JobName: jobName,
      Status: 'FAILED',
      StatusReason: (err as Error).message ?? String(err),
      Container: { ExitCode: isUserError(err) ? DETERMINISTIC_FAILURE_EXIT_CODE : 1 },
    }),
  );
  e.name = 'States.TaskFailed';
  return e;
}

/** Executes the definition locally (see the module comment). Never throws for a failed run: see `status`. */
export async function runLocal(opts: LocalRunOptions): Promise<LocalRunResult> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const deps: PipelineDeps = {
    store: opts.store,
    ...(opts.storeOptions ? { storeOptions: opts.storeOptions } : {}),
    ...(opts.baseDir ? { baseDir: opts.baseDir } : {}),
  };
  const stages = { ...STAGES, ...opts.stages };
  const oneAtATime = limiter(opts.jobs ?? 1);
  let plan: RunPlan | undefined;
  // When a stage fails, the execution fails: as Step Functions stops the other Map iterations (and their Batch
  // jobs), running stages are stopped (training checkpoints first) and queued ones never start.
  const cancel = new AbortController();
  const onStop = () => cancel.abort();
  opts.stopSignal?.addEventListener('abort', onStop);
  if (opts.stopSignal?.aborted) cancel.abort();
  const inFlight = new Set<Promise<unknown>>();

  const batch = (stageName: StageName) => async (input: unknown) => {
    const p = input as { JobName?: string; Parameters?: { runUri?: string; variant?: string } };
    const jobName = p.JobName ?? stageName;
    const runUri = p.Parameters?.runUri;
    if (!runUri) throw taskFailed(jobName, new Error('the job has no runUri parameter'));
    const job = oneAtATime(async () => {
      if (cancel.signal.aborted) {
        throw taskFailed(
          jobName,
          new Error('cancelled: the execution failed or was stopped before this job started'),
        );
      }
      try {
        const out = await stages[stageName]({
          runUri,
          ...(p.Parameters?.variant ? { variant: p.Parameters.variant } : {}),
          ...(opts.workDir ? { workDir: opts.workDir } : {}),
          ...(opts.storeOptions ? { storeOptions: opts.storeOptions } : {}),
          ...(opts.progress ? { progress: opts.progress } : {}),
          stopSignal: cancel.signal,
          ...(opts.afterCheckpointSync ? { afterCheckpointSync: opts.afterCheckpointSync } : {}),
          log,
        });
        return {
          JobName: jobName,
          JobId: `local-${jobName}`,
          Status: 'SUCCEEDED',
          StatusReason: out.detail ?? out.status,
        };
      } catch (err) {
        cancel.abort();
        throw taskFailed(jobName, err);
      }
    });
    inFlight.add(job);
    void job.catch(() => {}).finally(() => inFlight.delete(job));
    return job;
  };
  const handlers: Record<string, (input: unknown) => Promise<unknown>> = {
    [STATE_NAMES.validate]: async (input) => (plan = await validateRunInput(input, deps)),
    [STATE_NAMES.finalize]: (input) => finalizeRun(input, deps),
    [STATE_NAMES.recordFailure]: (input) => finalizeRun(input, deps),
  };
  for (const [name, stage] of Object.entries(BATCH_STATE_STAGES)) handlers[name] = batch(stage);
  const unbound = taskStates(opts.definition)
    .map(([name]) => name)
    .filter((name) => !handlers[name]);
  if (unbound.length > 0) {
    throw new UserError(
      `the state machine has Task states the local runner cannot bind: ${unbound.join(', ')} (known: ${Object.keys(handlers).join(', ')})`,
    );
  }

  const machine = new StateMachine(opts.definition as never, {
    validationOptions: { checkArn: true, checkPaths: true },
  });
  const execution = machine.run(opts.input as never, {
    overrides: { taskResourceLocalHandlers: handlers as never },
  });
  const transitions: string[] = [];
  let failure: { Error: string; Cause: string } | undefined;
  const events = (async () => {
    for await (const e of execution.eventLogs) {
      if (e.type === 'StateEntered') {
        transitions.push(e.state.name);
        const v = (e.state.input as { variant?: unknown } | null)?.variant;
        log(`→ ${e.state.name}${typeof v === 'string' ? ` [${v}]` : ''}`);
      } else if (e.type === 'StateRetried') {
        log(`↻ ${e.state.name}: retry ${e.retry.attempt}`);
      } else if (e.type === 'StateCaught') {
        log(`✗ ${e.state.name}: caught, recording the failure`);
      } else if (e.type === 'ExecutionFailed') {
        failure = { Error: e.Error, Cause: typeof e.Cause === 'string' ? e.Cause : JSON.stringify(e.Cause) };
      }
    }
  })();
  let output: RunSummary | null = null;
  try {
    output = (await execution.result) as unknown as RunSummary;
  } catch (err) {
    failure ??= { Error: (err as Error).name, Cause: (err as Error).message };
  }
  await events;
  // Stages the failure stopped are still finishing (a checkpoint, their status record): wait for them.
  while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
  opts.stopSignal?.removeEventListener('abort', onStop);
  const run = plan ? { runId: plan.runId, runUri: plan.runUri } : {};
  if (failure) return { status: 'FAILED', output: null, error: failure, transitions, ...run };
  return { status: output?.status ?? 'SUCCEEDED', output, transitions, ...run };
}
