/**
 * Runs on a deployed stack, from a workstation: start one (upload its local inputs and config, start the
 * execution), see where it stands, read its jobs' logs, and download its adapters and report. The commands in
 * bin/commands/{start,status,logs,fetch}.ts are thin wrappers; every AWS call goes through `AwsClients`, so tests
 * mock them (aws-sdk-client-mock).
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FilterLogEventsCommand, type FilteredLogEvent } from '@aws-sdk/client-cloudwatch-logs';
import { GetExecutionHistoryCommand, StartExecutionCommand, type HistoryEvent } from '@aws-sdk/client-sfn';
import { UserError } from '../errors.ts';
import {
  awsUserError,
  executionArnOf,
  executionConsoleLink,
  findRunExecution,
  resumeExecutionName,
  type AwsClients,
  type DeployedStack,
} from './deployed-stack.ts';
import { newRunId, parseRunConfig, type RunConfigInput } from './run-config.ts';
import { runKeys } from './run-layout.ts';
import type { RunStatus, StageRecord } from './status.ts';
import {
  getDir,
  isComplete,
  joinKey,
  openStore,
  putDir,
  readJson,
  type ArtifactStore,
} from './store/index.ts';

/** Where `moka start` uploads a run's local inputs and its config: `inputs/<runId>/…`. */
export const INPUTS_PREFIX = 'inputs';

function bucketStore(clients: AwsClients, stack: DeployedStack, prefix = ''): ArtifactStore {
  return openStore(`s3://${stack.bucket}${prefix ? `/${prefix}` : ''}`, { s3: { client: clients.s3 } });
}

// ---------------------------------------------------------------------------------------------------- start

export interface StartedRun {
  runId: string;
  executionName: string;
  executionArn: string;
  consoleLink: string;
  /** Where the config went (the execution input is `{configUri}`). */
  configUri: string;
  /** Local files and folders uploaded, with where they went. */
  uploaded: { local: string; uri: string }[];
  /** True when the runId had been started before (this execution resumes it). */
  resumed: boolean;
}

const isRemote = (u: string) => u.startsWith('s3://');
const localPath = (u: string, base: string) => {
  const p = u.startsWith('file://') ? fileURLToPath(u) : u;
  return isAbsolute(p) ? p : resolve(base, p);
};

/**
 * Starts a run on the deployed stack: validates the config locally (the same schema the stack's first state
 * uses), uploads every local path it names (model, data, initFrom adapters, eval data) to
 * `s3://<bucket>/inputs/<runId>/`, rewrites them to S3 URIs, uploads the config there, and starts the execution
 * with `{"configUri": …}` under the name `<runId>` (or, if that run was started before, `<runId>--r<time>`,
 * which resumes it).
 *
 * @throws UserError for a bad config, a missing local path, or AWS errors a user can fix.
 */
export async function startDeployedRun(
  clients: AwsClients,
  stack: DeployedStack,
  args: { configPath: string; runId?: string; onUpload?: (local: string, uri: string) => void; now?: Date },
): Promise<StartedRun> {
  let raw: RunConfigInput;
  try {
    raw = JSON.parse(await readFile(args.configPath, 'utf8')) as RunConfigInput;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${args.configPath}: no such file; check the path`);
    throw new UserError(`${args.configPath} is not valid JSON (${(err as Error).message}); fix the file`);
  }
  const runId = args.runId ?? (raw as { runId?: string }).runId ?? newRunId(args.now);
  parseRunConfig({ ...raw, runId }, args.configPath); // every problem at once, before anything is uploaded

  // Local inputs go to inputs/<runId>/<n>-<name>, in the order they appear.
  const base = dirname(resolve(args.configPath));
  const store = bucketStore(clients, stack, joinKey(INPUTS_PREFIX, runId));
  const uploaded: StartedRun['uploaded'] = [];
  const upload = async (u: string): Promise<string> => {
    if (isRemote(u)) return u;
    const path = localPath(u, base);
    let kind;
    try {
      kind = await stat(path);
    } catch {
      throw new UserError(
        `${u} (in ${args.configPath}) does not exist; give an existing path or an s3:// URI`,
      );
    }
    const key = `${uploaded.length}-${basename(path)}`;
    const uri = store.uriOf(key);
    args.onUpload?.(path, uri);
    try {
      if (kind.isDirectory()) await putDir(store, path, key);
      else await store.putFile(key, path);
    } catch (err) {
      throw awsUserError(err, `uploading ${path} to ${uri}`);
    }
    uploaded.push({ local: path, uri });
    return uri;
  };
  // One at a time: the <n>- prefix keeps two files of the same name apart.
  const list = async (v: string | string[]) => {
    if (!Array.isArray(v)) return upload(v);
    const out: string[] = [];
    for (const u of v) out.push(await upload(u));
    return out;
  };
  const config: Record<string, unknown> = { ...raw, runId, model: await upload(raw.model) };
  const data = raw.data as { train: string | string[]; validation?: string | string[] };
  config.data = {
    ...raw.data,
    train: await list(data.train),
    ...(data.validation !== undefined ? { validation: await list(data.validation) } : {}),
  };
  if (Array.isArray(raw.adapters)) {
    const adapters = [];
    for (const v of raw.adapters as { initFrom?: string }[]) {
      adapters.push(v.initFrom !== undefined ? { ...v, initFrom: await upload(v.initFrom) } : v);
    }
    config.adapters = adapters;
  }
  const evals = raw.evals as { data?: string } | undefined;
  if (evals?.data !== undefined) config.evals = { ...evals, data: await upload(evals.data) };

  // The config goes last: an interrupted upload leaves no config, and nothing starts from it.
  try {
    await store.writeText('config.json', `${JSON.stringify(config, null, 2)}\n`);
  } catch (err) {
    throw awsUserError(err, `uploading the config to ${store.uriOf('config.json')}`);
  }
  const configUri = store.uriOf('config.json');
  const input = JSON.stringify({ configUri });
  const start = async (name: string) =>
    clients.sfn.send(new StartExecutionCommand({ stateMachineArn: stack.stateMachineArn, name, input }));
  let executionName = runId;
  let resumed = false;
  let executionArn: string;
  try {
    try {
      executionArn = (await start(executionName)).executionArn!;
    } catch (err) {
      if ((err as Error).name !== 'ExecutionAlreadyExists') throw err;
      // The runId ran before: a new execution of the same runId resumes it (names stay taken for 90 days),
      // unless it is still running: two executions must never work on one run folder.
      const latest = await findRunExecution(clients, stack, runId);
      if (latest.status === 'RUNNING') {
        throw new UserError(
          `run ${runId} is still running (execution ${latest.name}); wait for it, or stop it in the console, before starting it again`,
        );
      }
      resumed = true;
      executionName = resumeExecutionName(runId, args.now);
      executionArn = (await start(executionName)).executionArn!;
    }
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw awsUserError(err, `starting run ${runId}`);
  }
  return {
    runId,
    executionName,
    executionArn,
    consoleLink: executionConsoleLink(executionArn),
    configUri,
    uploaded,
    resumed,
  };
}

// ---------------------------------------------------------------------------------------------------- status

/** Where a deployed run stands: its execution, the states running now, and each stage job. */
export interface DeployedRunStatus {
  runId: string;
  execution: {
    name: string;
    arn: string;
    status: string;
    startDate?: string;
    stopDate?: string;
    error?: string;
    cause?: string;
    consoleLink: string;
  };
  /** States entered and not yet left (e.g. Train inside the Map, once per running variant). */
  activeStates: string[];
  /** status.json's stages (quantize, train:<variant>, eval:<variant>, report), with training progress. */
  stages: (StageRecord & { id: string; progress?: { step: number; loss?: number } })[];
  /** The run's status from status.json (absent before validate-run has written it). */
  runStatus?: RunStatus['status'];
  /** The execution's output (finalize's summary) when it has finished. */
  output?: unknown;
}

/** The state names entered and not exited, from an execution history (oldest first). */
export function activeStatesOf(events: readonly HistoryEvent[]): string[] {
  const open = new Map<string, number>();
  for (const e of events) {
    const entered = e.stateEnteredEventDetails?.name;
    const exited = e.stateExitedEventDetails?.name;
    if (entered) open.set(entered, (open.get(entered) ?? 0) + 1);
    if (exited) open.set(exited, (open.get(exited) ?? 1) - 1);
  }
  return [...open].flatMap(([name, n]) => Array.from({ length: Math.max(0, n) }, () => name));
}

async function executionHistory(clients: AwsClients, executionArn: string): Promise<HistoryEvent[]> {
  const events: HistoryEvent[] = [];
  let nextToken: string | undefined;
  do {
    const r = await clients.sfn.send(
      new GetExecutionHistoryCommand({ executionArn, maxResults: 1000, nextToken }),
    );
    events.push(...(r.events ?? []));
    nextToken = r.nextToken;
  } while (nextToken);
  return events;
}

/** The last step (and loss) in a variant's metrics.jsonl: reads only its last 16 KiB. */
async function trainingProgress(
  store: ArtifactStore,
  folder: string,
): Promise<{ step: number; loss?: number } | undefined> {
  const key = joinKey(folder, 'metrics.jsonl');
  const obj = (await store.list(folder)).find((o) => o.key === key);
  if (!obj || obj.size === 0) return undefined;
  const stream = await store.openRead(key, { start: Math.max(0, obj.size - 16384) });
  let text = '';
  for await (const chunk of stream) text += chunk.toString();
  for (const line of text.trim().split('\n').reverse()) {
    try {
      const m = JSON.parse(line) as { step?: unknown; loss?: unknown };
      if (typeof m.step === 'number')
        return { step: m.step, ...(typeof m.loss === 'number' ? { loss: m.loss } : {}) };
    } catch {
      // the first line of the window may be cut
    }
  }
  return undefined;
}

export async function deployedRunStatus(
  clients: AwsClients,
  stack: DeployedStack,
  run: string,
): Promise<DeployedRunStatus> {
  const e = await findRunExecution(clients, stack, run);
  const arn = e.executionArn ?? executionArnOf(stack.stateMachineArn, run);
  const history = e.status === 'RUNNING' ? await executionHistory(clients, arn) : [];
  const store = bucketStore(clients, stack);
  const status = await readJson<RunStatus>(store, runKeys(run).status);
  const stages: DeployedRunStatus['stages'] = [];
  for (const [id, record] of Object.entries(status?.stages ?? {})) {
    const stage: DeployedRunStatus['stages'][number] = { id, ...record };
    if (record.stage === 'train' && record.status === 'RUNNING' && record.variant) {
      stage.progress = await trainingProgress(store, runKeys(run).variant(record.variant));
    }
    stages.push(stage);
  }
  return {
    runId: run,
    execution: {
      name: e.name ?? run,
      arn,
      status: e.status ?? 'UNKNOWN',
      ...(e.startDate ? { startDate: e.startDate.toISOString() } : {}),
      ...(e.stopDate ? { stopDate: e.stopDate.toISOString() } : {}),
      ...(e.error ? { error: e.error } : {}),
      ...(e.cause ? { cause: e.cause } : {}),
      consoleLink: executionConsoleLink(arn),
    },
    activeStates: activeStatesOf(history),
    stages,
    ...(status ? { runStatus: status.status } : {}),
    ...(e.output ? { output: JSON.parse(e.output) as unknown } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------- logs

/** The Batch log streams named in an execution history (finished jobs carry them in their description). */
export function logStreamsOf(events: readonly HistoryEvent[]): string[] {
  const streams = new Set<string>();
  const collect = (text: string | undefined) => {
    if (!text) return;
    try {
      const job = JSON.parse(text) as {
        Container?: { LogStreamName?: string };
        Attempts?: { Container?: { LogStreamName?: string } }[];
      };
      for (const a of job.Attempts ?? [])
        if (a.Container?.LogStreamName) streams.add(a.Container.LogStreamName);
      if (job.Container?.LogStreamName) streams.add(job.Container.LogStreamName);
    } catch {
      // not a job description
    }
  };
  for (const e of events) {
    collect(e.taskSucceededEventDetails?.output);
    collect(e.taskFailedEventDetails?.cause);
  }
  return [...streams];
}

export interface LogLine {
  stream: string;
  timestamp: number;
  message: string;
}

/**
 * The run's job log lines after `since` (ms since the epoch), oldest first: the streams named in the
 * execution history (finished jobs), plus those of running jobs, found by the runId their lines carry (each
 * stage logs it when it starts).
 */
export async function runLogLines(
  clients: AwsClients,
  stack: DeployedStack,
  runId: string,
  executionArn: string,
  since: number,
): Promise<LogLine[]> {
  const streams = new Set(logStreamsOf(await executionHistory(clients, executionArn)));
  const filter = async (extra: { logStreamNames?: string[]; filterPattern?: string }) => {
    const out: FilteredLogEvent[] = [];
    let nextToken: string | undefined;
    do {
      const r = await clients.logs.send(
        new FilterLogEventsCommand({
          logGroupName: stack.jobLogGroup,
          startTime: since,
          nextToken,
          ...extra,
        }),
      );
      out.push(...(r.events ?? []));
      nextToken = r.nextToken;
    } while (nextToken);
    return out;
  };
  for (const e of await filter({ filterPattern: `"${runId}"` }))
    if (e.logStreamName) streams.add(e.logStreamName);
  if (streams.size === 0) return [];
  const names = [...streams];
  const lines: LogLine[] = [];
  for (let i = 0; i < names.length; i += 100) {
    // FilterLogEvents takes at most 100 stream names.
    for (const e of await filter({ logStreamNames: names.slice(i, i + 100) })) {
      lines.push({
        stream: e.logStreamName ?? '',
        timestamp: e.timestamp ?? 0,
        message: (e.message ?? '').trimEnd(),
      });
    }
  }
  return lines.sort((a, b) => a.timestamp - b.timestamp);
}

/**
 * Prints a run's job logs; with `follow`, keeps polling until the execution has finished (then prints what
 * came last). Returns the execution's final status.
 */
export async function printRunLogs(
  clients: AwsClients,
  stack: DeployedStack,
  run: string,
  opts: {
    follow: boolean;
    pollMs?: number;
    write: (line: LogLine) => void;
    sleep?: (ms: number) => Promise<void>;
  },
): Promise<string> {
  const sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  let since: number | null = null;
  const seen = new Set<string>();
  for (;;) {
    const e = await findRunExecution(clients, stack, run);
    // Nothing of this execution is older than its start: searching from there keeps the first query small.
    since ??= (e.startDate?.getTime() ?? 0) - 60_000;
    const lines = await runLogLines(clients, stack, run, e.executionArn!, since);
    for (const l of lines) {
      const id = `${l.stream}\u0000${l.timestamp}\u0000${l.message}`;
      if (seen.has(id)) continue; // the window overlaps by a second: lines at its edge come twice
      seen.add(id);
      opts.write(l);
      since = Math.max(since, l.timestamp - 1000);
    }
    if (!opts.follow || e.status !== 'RUNNING') return e.status ?? 'UNKNOWN';
    await sleep(opts.pollMs ?? 5000);
  }
}

// ---------------------------------------------------------------------------------------------------- fetch

export interface FetchedRun {
  runId: string;
  /** Local folders written: variants/<name>/adapter and report. */
  folders: string[];
  status?: string;
}

/**
 * Downloads a run's finished adapters (`variants/<name>/adapter/`) and report (`report/`), plus its
 * config.json and status.json, into `outDir`, keeping the run layout. Only complete folders (with their
 * `_COMPLETE` marker) are fetched.
 * @throws UserError when the run has nothing finished yet.
 */
export async function fetchDeployedRun(
  clients: AwsClients,
  stack: DeployedStack,
  run: string,
  outDir: string,
  onFolder?: (key: string) => void,
): Promise<FetchedRun> {
  const store = bucketStore(clients, stack, runKeys(run).run);
  const status = await readJson<RunStatus>(store, 'status.json');
  if (!status) {
    throw new UserError(
      `run ${run} has no status.json in s3://${stack.bucket}/${runKeys(run).run}/; check the runId (moka status ${run})`,
    );
  }
  const folders = [...status.variants.map((v) => joinKey('variants', v, 'adapter')), 'report'];
  const done: string[] = [];
  for (const f of folders) {
    if (!(await isComplete(store, f))) continue;
    onFolder?.(f);
    const local = join(outDir, ...f.split('/'));
    await getDir(store, f, local);
    done.push(local);
  }
  if (done.length === 0) {
    throw new UserError(
      `run ${run} has no finished adapter or report yet (status ${status.status}); see moka status ${run}`,
    );
  }
  for (const file of ['config.json', 'status.json']) await store.getFile(file, join(outDir, file));
  return { runId: run, folders: done, status: status.status };
}
