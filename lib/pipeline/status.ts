/**
 * status.json: where a run stands. `status` is the run's (RUNNING → SUCCEEDED | FAILED); `stages` holds one entry
 * per stage job (`quantize`, `train:<variant>`, `eval:<variant>`, `report`). Each stage also writes its own
 * record (stages/<stage>[.<variant>].json), which no other job touches: parallel jobs may overwrite each other's
 * update of status.json, so finalize rebuilds `stages` from those records at the end.
 */
import { joinKey, readJson, writeJson, type ArtifactStore } from './store/index.ts';
import { runKeys } from './run-layout.ts';

export type RunState = 'RUNNING' | 'SUCCEEDED' | 'FAILED';
export type StageState = 'RUNNING' | 'SUCCEEDED' | 'SKIPPED' | 'FAILED';

export interface StageRecord {
  stage: string;
  variant?: string;
  status: StageState;
  startedAt: string;
  endedAt?: string;
  /** Why it was skipped, or what it did (e.g. "resumed from step 20"). */
  detail?: string;
  error?: string;
  /** Stage-specific results (steps trained, metrics, output URIs). */
  result?: Record<string, unknown>;
}

export interface RunError {
  Error: string;
  Cause: string;
}

export interface RunStatus {
  runId: string;
  runUri: string;
  status: RunState;
  createdAt: string;
  updatedAt: string;
  endedAt?: string;
  variants: string[];
  stages: Record<string, StageRecord>;
  error?: RunError & { stage?: string };
}

export function stageId(stage: string, variant?: string): string {
  return variant ? `${stage}:${variant}` : stage;
}

export async function readStatus(store: ArtifactStore, runId: string): Promise<RunStatus | null> {
  return readJson<RunStatus>(store, runKeys(runId).status);
}

// Updates from the jobs of one process (the local runner runs variants concurrently) are serialised here.
let chain: Promise<unknown> = Promise.resolve();

/** Runs `body` after every status.json update this process started before it (they read, modify and write). */
function serialised<T>(body: () => Promise<T>): Promise<T> {
  const next = chain.then(body);
  chain = next.catch(() => {});
  return next;
}

/** Read-modify-write of status.json (serialised within this process); null when there is none. */
export function updateStatus(
  store: ArtifactStore,
  runId: string,
  change: (s: RunStatus) => void,
): Promise<RunStatus | null> {
  return serialised(async () => {
    const s = await readStatus(store, runId);
    if (!s) return null;
    change(s);
    s.updatedAt = new Date().toISOString();
    await writeJson(store, runKeys(runId).status, s);
    return s;
  });
}

/** Replaces status.json with `build(prior)` (serialised with updateStatus). */
export function replaceStatus(
  store: ArtifactStore,
  runId: string,
  build: (prior: RunStatus | null) => RunStatus | Promise<RunStatus>,
): Promise<RunStatus> {
  return serialised(async () => {
    const s = await build(await readStatus(store, runId));
    await writeJson(store, runKeys(runId).status, s);
    return s;
  });
}

/** Writes a stage's own record and mirrors it into status.json. */
export async function recordStage(store: ArtifactStore, runId: string, record: StageRecord): Promise<void> {
  await writeJson(store, runKeys(runId).stageRecord(record.stage, record.variant), record);
  await updateStatus(store, runId, (s) => {
    s.stages[stageId(record.stage, record.variant)] = record;
  });
}

/** Every stage record of the run (stages/*.json), keyed as in status.json. */
export async function readStageRecords(
  store: ArtifactStore,
  runId: string,
): Promise<Record<string, StageRecord>> {
  const out: Record<string, StageRecord> = {};
  for (const o of await store.list(joinKey(runKeys(runId).run, 'stages'))) {
    const r = await readJson<StageRecord>(store, o.key);
    if (r) out[stageId(r.stage, r.variant)] = r;
  }
  return out;
}
