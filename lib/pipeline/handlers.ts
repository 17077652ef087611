/**
 * The state machine's Lambda steps as plain functions (functions/validate-run.ts and functions/finalize.ts wrap
 * them; the local runner calls them directly):
 *
 * - `validateRunInput`: the first state. Validates the run config with the schema and checks that everything it
 *   names can be reached (store, model, data, initFrom adapters, eval data), listing every problem in one
 *   UserError before any work starts; then writes config.json, model.json and status.json and returns the plan
 *   the state machine needs (the Map iterates over `variants`).
 * - `finalizeRun`: the last state on both paths. Records SUCCEEDED, or FAILED with the caught error, in
 *   status.json and returns the execution's output summary (adapter and report URIs, metrics).
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { UserError, isUserError } from '../errors.ts';
import { quantizedModelKey } from './model-cache.ts';
import {
  BASE_VARIANT,
  isTaskFile,
  newRunId,
  parseRunConfig,
  runConfigToJson,
  variantNames,
  type RunConfig,
} from './run-config.ts';
import { quantizedCacheKey, runKeys, runUriOf } from './run-layout.ts';
import { readStageRecords, replaceStatus, stageId, type RunError } from './status.ts';
import { BATCH_STATE_STAGES } from './state-names.ts';
import {
  COMPLETE_MARKER,
  childUri,
  isComplete,
  joinKey,
  localPathOfUri,
  openStore,
  pathExists,
  readJson,
  splitUri,
  writeJson,
  type ArtifactStore,
  type OpenStoreOptions,
} from './store/index.ts';
import type { ModelRecord } from './stages/stage-context.ts';

export interface PipelineDeps {
  /** The store root the run lives under (S3 in Lambda, a folder locally). */
  store: ArtifactStore;
  /** Options for stores opened for other URIs (model, data). */
  storeOptions?: OpenStoreOptions;
  now?: () => Date;
  /** Relative local paths in the config are resolved against this folder (default: the working directory). */
  baseDir?: string;
}

/** What the validate step returns: the state machine's working state. */
export interface RunPlan {
  runId: string;
  runUri: string;
  /** Variant names, in config order (the Map's items). */
  variants: string[];
  /** Whether evals are configured (the Choices before Evaluate/EvaluateBase). */
  evaluate: boolean;
  /** False when quantization is off or the quantized model is already cached (the Choice before Quantize). */
  quantizeNeeded: boolean;
  /** The base model the stages use (the quantized cache entry or the source). */
  modelUri: string;
  /** True when this runId existed already (a re-run resumes it). */
  resumed: boolean;
}

export interface RunSummary {
  runId: string | null;
  runUri: string | null;
  status: 'SUCCEEDED' | 'FAILED';
  /** Variant name → adapter folder URI (variants whose training completed). */
  adapterUris: Record<string, string>;
  reportUri: string | null;
  /** Variant (and `base`) → task → metric → value. */
  metrics: Record<string, Record<string, Record<string, number>>>;
  error?: RunError & { stage?: string };
}

/** The execution input: a run config, or `{configUri}` naming a run-config JSON in a store (S3 trigger). */
async function readInput(input: unknown, deps: PipelineDeps): Promise<{ raw: unknown; source: string }> {
  if (input && typeof input === 'object' && !Array.isArray(input) && 'configUri' in input) {
    const { configUri, ...rest } = input as { configUri: unknown };
    if (typeof configUri !== 'string' || Object.keys(rest).length > 0) {
      throw new UserError(
        'the execution input {"configUri": "s3://…/run.json"} takes only configUri (a string)',
      );
    }
    const [parent, name] = splitUri(configUri);
    const raw = await readJson<unknown>(openStore(parent || '.', deps.storeOptions), name);
    if (raw === null) throw new UserError(`configUri ${configUri} does not exist`);
    return { raw, source: configUri };
  }
  return { raw: input, source: 'run config' };
}

/** True when `uri` names an existing file or folder (an object or a non-empty prefix on S3). */
async function uriExists(uri: string, deps: PipelineDeps): Promise<boolean> {
  if (!uri.startsWith('s3://')) return pathExists(localPathOfUri(uri));
  const [parent, name] = splitUri(uri);
  const store = openStore(parent, deps.storeOptions);
  return (await store.exists(name)) || (await store.list(name)).length > 0;
}

/** Relative local paths become absolute file paths, so stages started elsewhere find them. */
function absolutize(config: RunConfig, baseDir: string): RunConfig {
  const abs = (u: string) =>
    u.startsWith('s3://') || u.startsWith('file://') || isAbsolute(u)
      ? u
      : pathToFileURL(resolve(baseDir, u)).href;
  const list = (v: string | string[]) => (Array.isArray(v) ? v.map(abs) : abs(v));
  return {
    ...config,
    model: abs(config.model),
    data: {
      ...config.data,
      train: list(config.data.train),
      ...(config.data.validation !== undefined ? { validation: list(config.data.validation) } : {}),
    },
    adapters: config.adapters.map((v) =>
      v.initFrom !== undefined ? { ...v, initFrom: abs(v.initFrom) } : v,
    ),
    ...(config.evals
      ? {
          evals: {
            ...config.evals,
            tasks: config.evals.tasks.map((t) => (isTaskFile(t) ? abs(t) : t)),
            ...(config.evals.data ? { data: abs(config.evals.data) } : {}),
          },
        }
      : {}),
  };
}

/** Every reachability problem of a valid config (store, model, data, adapters, eval data), as messages. */
async function reachabilityProblems(config: RunConfig, deps: PipelineDeps): Promise<string[]> {
  const problems: string[] = [];
  try {
    await deps.store.check();
  } catch (err) {
    if (!isUserError(err)) throw err;
    problems.push(err.message);
  }
  const check = async (path: string, uri: string, what: string) => {
    try {
      if (!(await uriExists(uri, deps))) problems.push(`${path}: ${uri} does not exist (${what})`);
    } catch (err) {
      problems.push(`${path}: ${uri} cannot be read (${(err as Error).name}: ${(err as Error).message})`);
    }
  };
  await check(
    'model',
    childUri(config.model, 'config.json'),
    'expected a Hugging Face model folder with config.json',
  );
  const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
  for (const [i, u] of list(config.data.train).entries()) await check(`data.train[${i}]`, u, 'training data');
  for (const [i, u] of list(config.data.validation ?? []).entries())
    await check(`data.validation[${i}]`, u, 'validation data');
  for (const [i, v] of config.adapters.entries()) {
    if (v.initFrom !== undefined) {
      await check(
        `adapters[${i}].initFrom`,
        childUri(v.initFrom, 'adapter_config.json'),
        'expected an adapter folder',
      );
    }
  }
  for (const [i, t] of (config.evals?.tasks ?? []).entries()) {
    if (isTaskFile(t)) await check(`evals.tasks[${i}]`, t, 'task file');
  }
  if (config.evals?.data) await check('evals.data', config.evals.data, 'evaluation data');
  return problems;
}

/** Whether an earlier config.json holds the same run (both normalized by the schema, so key order is fixed). */
function sameConfig(previous: unknown, current: Record<string, unknown>): boolean {
  try {
    return JSON.stringify(runConfigToJson(parseRunConfig(previous))) === JSON.stringify(current);
  } catch {
    return false;
  }
}

/**
 * The validate step (see the module comment). Throws a UserError listing every problem; nothing is written then.
 * A runId that exists already must carry the same config (re-running resumes it); another config is refused.
 */
export async function validateRunInput(input: unknown, deps: PipelineDeps): Promise<RunPlan> {
  const { raw, source } = await readInput(input, deps);
  const config = absolutize(parseRunConfig(raw, source), deps.baseDir ?? process.cwd());
  const problems = await reachabilityProblems(config, deps);
  if (problems.length > 0) {
    throw new UserError(
      `${source} cannot run (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`,
    );
  }
  const runId = config.runId ?? newRunId(deps.now?.());
  const withId: RunConfig = { ...config, runId };
  const keys = runKeys(runId);
  const store = deps.store;
  const now = (deps.now?.() ?? new Date()).toISOString();

  const previous = await readJson<unknown>(store, keys.config);
  const configJson = runConfigToJson(withId);
  if (previous !== null && !sameConfig(previous, configJson)) {
    throw new UserError(
      `run ${runId} already exists in ${store.uri} with a different config; re-running a runId resumes it, so ` +
        'give a new runId (or none, to generate one) for a changed config',
    );
  }

  const cacheKey = await quantizedModelKey(withId, deps.storeOptions);
  const model: ModelRecord = {
    source: withId.model,
    quantized: cacheKey ? { key: cacheKey, uri: store.uriOf(quantizedCacheKey(cacheKey)) } : null,
  };
  const quantizeNeeded = cacheKey !== null && !(await isComplete(store, quantizedCacheKey(cacheKey)));

  const variants = variantNames(withId);
  await writeJson(store, keys.config, configJson);
  await writeJson(store, keys.model, model);
  // A re-run keeps the stage entries of the earlier attempt (they show what will be skipped).
  const status = await replaceStatus(store, runId, (prior) => ({
    runId,
    runUri: runUriOf(store, runId),
    status: 'RUNNING',
    createdAt: prior?.createdAt ?? now,
    updatedAt: now,
    variants,
    stages: prior?.stages ?? {},
  }));
  return {
    runId,
    runUri: status.runUri,
    variants,
    evaluate: withId.evals !== undefined,
    quantizeNeeded,
    modelUri: model.quantized?.uri ?? model.source,
    resumed: previous !== null,
  };
}

/** The message inside a caught error's Cause: Batch's StatusReason, a Lambda's errorMessage, or the text. */
export function causeMessage(cause: string): { message: string; jobName?: string } {
  try {
    const c = JSON.parse(cause) as Record<string, unknown>;
    const message = (c.StatusReason ?? c.errorMessage ?? c.message ?? cause) as string;
    return { message, ...(typeof c.JobName === 'string' ? { jobName: c.JobName } : {}) };
  } catch {
    return { message: cause };
  }
}

/**
 * The stage job named in a failed Batch job's description (`<runId>-<State>[-<variant>]`, as the state machine
 * names jobs), as status.json keys stages (`train:moka`); empty when the cause names none.
 */
export function failedStageOf(cause: string, runId: string): { stage?: string } {
  const { jobName } = causeMessage(cause);
  if (!jobName?.startsWith(`${runId}-`)) return {};
  const rest = jobName.slice(runId.length + 1);
  const dash = rest.indexOf('-');
  const stateName = dash < 0 ? rest : rest.slice(0, dash);
  const stage = BATCH_STATE_STAGES[stateName];
  if (!stage) return {};
  return { stage: stageId(stage, dash < 0 ? undefined : rest.slice(dash + 1)) };
}

/**
 * The finalize step: records the outcome in status.json (stages rebuilt from their records) and returns the
 * output summary. Input: the state machine's state, with `error: {Error, Cause}` on the failure path.
 */
export async function finalizeRun(input: unknown, deps: PipelineDeps): Promise<RunSummary> {
  const state = (input ?? {}) as Partial<RunPlan> & { error?: RunError };
  const failed = state.error !== undefined;
  const empty: RunSummary = {
    runId: state.runId ?? null,
    runUri: state.runUri ?? null,
    status: failed ? 'FAILED' : 'SUCCEEDED',
    adapterUris: {},
    reportUri: null,
    metrics: {},
  };
  if (!state.runId || !state.runUri) {
    // Validation itself failed (the state is still the execution input, without the plan's runUri): nothing was
    // written, and an earlier run of the same runId is no business of this execution.
    const error = state.error
      ? { Error: state.error.Error, Cause: causeMessage(state.error.Cause ?? '').message, stage: 'validate' }
      : undefined;
    return { ...empty, runUri: null, ...(error ? { error } : {}) };
  }
  const store = deps.store;
  const runId = state.runId;
  const keys = runKeys(runId);
  const error = state.error
    ? {
        Error: state.error.Error,
        Cause: causeMessage(state.error.Cause ?? '').message,
        ...failedStageOf(state.error.Cause ?? '', runId),
      }
    : undefined;
  const status = await replaceStatus(store, runId, async (prior) => {
    const now = (deps.now?.() ?? new Date()).toISOString();
    return {
      runId,
      runUri: runUriOf(store, runId),
      status: failed ? 'FAILED' : 'SUCCEEDED',
      createdAt: prior?.createdAt ?? now,
      updatedAt: now,
      endedAt: now,
      variants: prior?.variants ?? state.variants ?? [],
      stages: { ...prior?.stages, ...(await readStageRecords(store, runId)) },
      ...(error ? { error } : {}),
    };
  });

  const adapterUris: Record<string, string> = {};
  const metrics: RunSummary['metrics'] = {};
  for (const v of [...status.variants, BASE_VARIANT]) {
    if (v !== BASE_VARIANT && (await isComplete(store, keys.adapter(v))))
      adapterUris[v] = store.uriOf(keys.adapter(v));
    const summary = await readJson<{
      tasks?: { task: string; metrics: Record<string, { value: number }> }[];
    }>(store, keys.evalSummary(v));
    if (summary?.tasks) {
      metrics[v] = Object.fromEntries(
        summary.tasks.map((t) => [
          t.task,
          Object.fromEntries(Object.entries(t.metrics).map(([k, m]) => [k, m.value])),
        ]),
      );
    }
  }
  const reportDone = await store.exists(joinKey(keys.report, COMPLETE_MARKER));
  return {
    runId,
    runUri: status.runUri,
    status: status.status === 'FAILED' ? 'FAILED' : 'SUCCEEDED',
    adapterUris,
    reportUri: reportDone ? store.uriOf(joinKey(keys.report, 'report.html')) : null,
    metrics,
    ...(error ? { error } : {}),
  };
}
