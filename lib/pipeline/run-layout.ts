/**
 * Where a run's files live in the artifact store (keys relative to the store root):
 *
 *   runs/<runId>/config.json                  the validated run config (input form, defaults filled in)
 *   runs/<runId>/status.json                  overall status + one entry per stage (status.ts)
 *   runs/<runId>/model.json                   the base model the stages use: the source, or the quantized cache entry
 *   runs/<runId>/stages/<stage>[.<variant>].json   each stage's own record (no write races between parallel jobs)
 *   runs/<runId>/variants/<name>/checkpoints/step-N/   synced as the trainer writes them (each with _COMPLETE)
 *   runs/<runId>/variants/<name>/adapter/     the trained adapter (PEFT-style), _COMPLETE last
 *   runs/<runId>/variants/<name>/{metrics.jsonl, train-config.json, train-summary.json}
 *   runs/<runId>/variants/<name>/evals/<task>.json, _COMPLETE; eval-summary.json beside it
 *   runs/<runId>/base/evals/…                 the un-adapted model's evaluation (the report's reference row)
 *   runs/<runId>/report/{report.json, report.md, report.html}, _COMPLETE
 *   cache/quantized/<key>/                    quantized models, keyed by source content + settings, shared by runs
 *
 * A run is addressed by its run URI `<store root>/runs/<runId>`; stages get only that URI (and a variant name).
 */
import { UserError } from '../errors.ts';
import { BASE_VARIANT, RUN_ID_PATTERN } from './run-config.ts';
import { joinKey, openStore, splitUri, type ArtifactStore, type OpenStoreOptions } from './store/index.ts';

export const RUNS_PREFIX = 'runs';
export const QUANTIZED_CACHE_PREFIX = 'cache/quantized';

export interface RunLocation {
  /** The store root (runs/ and cache/ live under it). */
  store: ArtifactStore;
  runId: string;
}

export function runUriOf(store: ArtifactStore, runId: string): string {
  return store.uriOf(joinKey(RUNS_PREFIX, runId));
}

/** `<root>/runs/<runId>` → the store at `<root>` and the runId. */
export function openRun(runUri: string, opts: OpenStoreOptions = {}): RunLocation {
  const [parent, runId] = splitUri(runUri);
  const [root, runs] = splitUri(parent);
  if (runs !== RUNS_PREFIX || !RUN_ID_PATTERN.test(runId)) {
    throw new UserError(
      `--run ${runUri} is not a run URI; give <store>/runs/<runId> (e.g. ./runs/my-run or s3://bucket/runs/my-run)`,
    );
  }
  return { store: openStore(root === '' ? '.' : root, opts), runId };
}

export const runKeys = (runId: string) => {
  const run = joinKey(RUNS_PREFIX, runId);
  const variant = (name: string) =>
    name === BASE_VARIANT ? joinKey(run, 'base') : joinKey(run, 'variants', name);
  return {
    run,
    config: joinKey(run, 'config.json'),
    status: joinKey(run, 'status.json'),
    model: joinKey(run, 'model.json'),
    stageRecord: (stage: string, variantName?: string) =>
      joinKey(run, 'stages', `${stage}${variantName ? `.${variantName}` : ''}.json`),
    variant,
    checkpoints: (name: string) => joinKey(variant(name), 'checkpoints'),
    adapter: (name: string) => joinKey(variant(name), 'adapter'),
    evals: (name: string) => joinKey(variant(name), 'evals'),
    /** evaluate()'s summary (beside evals/, whose *.json files are all task results). */
    evalSummary: (name: string) => joinKey(variant(name), 'eval-summary.json'),
    report: joinKey(run, 'report'),
  };
};

export function quantizedCacheKey(key: string): string {
  return joinKey(QUANTIZED_CACHE_PREFIX, key);
}
