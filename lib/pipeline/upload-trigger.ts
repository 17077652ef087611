/**
 * Starting runs from S3 uploads (the `start-on-upload` Lambda; aws-pipeline-notes.md §7, option B).
 *
 * The bucket sends "Object Created" events to EventBridge; a rule forwards those under the watched prefixes to
 * the Lambda, which decides here what an upload means:
 *
 * - `<runsIncomingPrefix><file>.json` (default `runs-incoming/`): a run config; the execution starts with it.
 * - `<datasetsPrefix><name>/…/_READY` (default `datasets/`): the commit object of a data set. Data sets are many
 *   files, uploaded one by one, so a run starts only when the uploader writes `_READY` last, in the folder that
 *   holds the data. The run config comes from the template `<triggersPrefix><name>.json` (default `triggers/`):
 *   `{"config": {…a run config…}, "initFromPrevious": true}`. Its `data.train` / `data.validation` may be relative
 *   paths, resolved against the folder of `_READY` (absent `data.train`: that whole folder); with
 *   `initFromPrevious`, each variant starts from its adapter in the newest succeeded retraining run of `<name>`.
 * - Anything else — above all the keys the pipeline writes under `runs/` — is ignored, so the pipeline can never
 *   trigger itself even if the rule is widened by mistake.
 *
 * Events are delivered at least once, so the execution name is a pure function of the object: its key and its
 * version id (or, on an unversioned bucket, its ETag and event sequencer). A duplicate event asks for the same
 * name, Step Functions answers ExecutionAlreadyExists, and that counts as success: one upload, one execution.
 * The name is also the run's runId, so the run folder is keyed by it (§6) — unless an uploaded config sets its
 * own runId: then the execution is `<runId>--u<hash>` and re-uploading the config resumes that run.
 *
 * The config itself is validated by the state machine's first state (validate-run), as for a run started from
 * the console: a bad upload becomes a failed execution listing every problem, where the user looks for it, and
 * the failed-execution alarm notifies them.
 */
import { createHash } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ListExecutionsCommand, StartExecutionCommand, type SFNClient } from '@aws-sdk/client-sfn';
import type { JsonLogger } from './json-log.ts';
import { RUN_ID_PATTERN } from './run-config.ts';
import { COMPLETE_MARKER } from './store/artifact-store.ts';

/** The object that commits a data set folder. */
export const READY_OBJECT = '_READY';
/** Execution names of retraining runs: `retrain-<dataset>-<16 hex>`. */
export const RETRAIN_PREFIX = 'retrain-';
/** Data set names: they become part of execution names and S3 keys. */
export const DATASET_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$/;

export interface UploadTriggerSettings {
  readonly stateMachineArn: string;
  readonly runsIncomingPrefix: string;
  readonly datasetsPrefix: string;
  readonly triggersPrefix: string;
  /** Only events of this bucket are acted on. @default any bucket */
  readonly bucket?: string;
}

/** The part of an EventBridge "Object Created" event this trigger reads. */
export interface ObjectCreatedEvent {
  readonly source?: string;
  readonly 'detail-type'?: string;
  readonly detail?: {
    readonly bucket?: { readonly name?: string };
    readonly object?: {
      readonly key?: string;
      readonly etag?: string;
      readonly 'version-id'?: string;
      readonly sequencer?: string;
      readonly size?: number;
    };
    readonly reason?: string;
  };
}

/** What an upload means. */
export type UploadAction =
  | { readonly kind: 'ignore'; readonly reason: string; readonly key?: string }
  | { readonly kind: 'run-config'; readonly object: S3ObjectRef; readonly executionName: string }
  | {
      readonly kind: 'retrain';
      readonly object: S3ObjectRef;
      readonly executionName: string;
      readonly dataset: string;
      /** The key prefix of the folder holding `_READY` (ends with '/'). */
      readonly folder: string;
    };

export interface S3ObjectRef {
  readonly bucket: string;
  readonly key: string;
  readonly versionId?: string;
  readonly etag?: string;
}

/** The outcome the Lambda logs and returns. */
export type UploadOutcome =
  | { readonly outcome: 'ignored'; readonly reason: string; readonly key?: string }
  | { readonly outcome: 'rejected'; readonly reason: string; readonly key: string }
  | {
      readonly outcome: 'started' | 'duplicate';
      readonly executionName: string;
      readonly key: string;
      readonly executionArn?: string;
    };

/**
 * S3 object keys in notifications may be URL-encoded (a space as "+", other bytes as %XX); EventBridge's are
 * documented plain, but decoding is harmless for keys without "%" or "+" and right for those with them.
 */
export function decodeS3Key(key: string): string {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    return key; // a literal "%" not followed by hex: the key was not encoded
  }
}

/**
 * The execution name of an upload: `<label>-<16 hex of sha256(bucket/key @ version)>`, at most 80 characters of
 * `[A-Za-z0-9_-]` (what Step Functions accepts with CloudWatch logging on). `label` is sanitized and cut to fit.
 */
export function executionNameFor(label: string, object: S3ObjectRef, sequencer?: string): string {
  const identity = object.versionId ?? `${object.etag ?? ''}:${sequencer ?? ''}`;
  const hash = createHash('sha256')
    .update(`${object.bucket}/${object.key}@${identity}`)
    .digest('hex')
    .slice(0, 16);
  const safe =
    label
      .replace(/[^A-Za-z0-9_-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 80 - 17) || 'upload';
  return `${safe}-${hash}`;
}

/**
 * The execution name of an upload whose config names its run: `<runId>--u<the upload's 16 hex>` (≤ 80
 * characters), the form `moka status <runId>` looks for besides the runId itself.
 */
export function resumedRunExecutionName(runId: string, uploadExecutionName: string): string {
  return `${runId.slice(0, 80 - 19)}--u${uploadExecutionName.slice(-16)}`;
}

/** Decides what an event means (pure). */
export function classifyUpload(event: ObjectCreatedEvent, settings: UploadTriggerSettings): UploadAction {
  if (event.source !== 'aws.s3' || event['detail-type'] !== 'Object Created') {
    return {
      kind: 'ignore',
      reason: `not an S3 "Object Created" event (${event.source}/${event['detail-type']})`,
    };
  }
  const bucket = event.detail?.bucket?.name;
  const rawKey = event.detail?.object?.key;
  if (!bucket || !rawKey) return { kind: 'ignore', reason: 'the event names no bucket or key' };
  if (settings.bucket && bucket !== settings.bucket) {
    return { kind: 'ignore', reason: `bucket ${bucket} is not the artifact bucket`, key: rawKey };
  }
  const key = decodeS3Key(rawKey);
  const o = event.detail!.object!;
  const object: S3ObjectRef = { bucket, key, versionId: o['version-id'], etag: o.etag };
  const sequencer = o.sequencer;
  if (key.startsWith(settings.runsIncomingPrefix)) {
    const file = key.slice(settings.runsIncomingPrefix.length);
    if (file.includes('/') || !file.endsWith('.json') || file === '.json') {
      return { kind: 'ignore', reason: `only ${settings.runsIncomingPrefix}<name>.json starts a run`, key };
    }
    return {
      kind: 'run-config',
      object,
      executionName: executionNameFor(file.slice(0, -'.json'.length), object, sequencer),
    };
  }
  if (key.startsWith(settings.datasetsPrefix)) {
    const rest = key.slice(settings.datasetsPrefix.length);
    const parts = rest.split('/');
    if (parts.length < 2 || parts[parts.length - 1] !== READY_OBJECT) {
      return {
        kind: 'ignore',
        reason: `data files wait for ${settings.datasetsPrefix}<name>/…/${READY_OBJECT}`,
        key,
      };
    }
    const dataset = parts[0]!;
    if (!DATASET_NAME_PATTERN.test(dataset)) {
      return {
        kind: 'ignore',
        reason: `data set name "${dataset}" must be 1-48 letters, digits, "_" or "-" (it names the runs)`,
        key,
      };
    }
    const folder = key.slice(0, key.length - READY_OBJECT.length);
    return {
      kind: 'retrain',
      object,
      dataset,
      folder,
      executionName: executionNameFor(`${RETRAIN_PREFIX}${dataset}`, object, sequencer),
    };
  }
  return { kind: 'ignore', reason: 'outside the watched prefixes', key };
}

/** A retraining template, `<triggersPrefix><name>.json`. */
export interface RetrainTemplate {
  /** A run config (its input form); `data.train` / `data.validation` may be relative to the uploaded folder. */
  readonly config: Record<string, unknown>;
  /** Start each variant from the adapter of the same name in the newest succeeded retraining run. */
  readonly initFromPrevious?: boolean;
}

/** Reads a template object's JSON; throws an Error saying what is wrong with it. */
export function parseRetrainTemplate(text: string, where: string): RetrainTemplate {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${where} is not valid JSON (${(err as Error).message})`);
  }
  const t = json as Record<string, unknown>;
  if (
    !t ||
    typeof t !== 'object' ||
    Array.isArray(t) ||
    !t.config ||
    typeof t.config !== 'object' ||
    Array.isArray(t.config)
  ) {
    throw new Error(`${where} must be {"config": {…a run config…}, "initFromPrevious": true|false}`);
  }
  const unknown = Object.keys(t).filter((k) => k !== 'config' && k !== 'initFromPrevious');
  if (unknown.length > 0)
    throw new Error(`${where}: unknown field(s) ${unknown.map((k) => `"${k}"`).join(', ')}`);
  if (t.initFromPrevious !== undefined && typeof t.initFromPrevious !== 'boolean') {
    throw new Error(`${where}: initFromPrevious must be true or false`);
  }
  return {
    config: t.config as Record<string, unknown>,
    initFromPrevious: t.initFromPrevious as boolean | undefined,
  };
}

const isAbsoluteUri = (s: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(s) || s.startsWith('/');

/**
 * The run config of a retraining run: the template's config with `runId`, the data resolved against the uploaded
 * folder, and (given `previousAdapters`, variant name → adapter URI) `initFrom` on each variant that has one.
 * A single adapter config becomes the one-variant list the run config would make of it (named after its type),
 * so that `initFrom` has a place.
 */
export function buildRetrainConfig(
  template: RetrainTemplate,
  args: {
    runId: string;
    bucket: string;
    folder: string;
    previousAdapters?: Readonly<Record<string, string>>;
  },
): Record<string, unknown> {
  const folderUri = `s3://${args.bucket}/${args.folder}`;
  const resolve = (v: unknown): unknown =>
    typeof v === 'string'
      ? isAbsoluteUri(v)
        ? v
        : `${folderUri}${v.replace(/^\.\//, '')}`
      : Array.isArray(v)
        ? v.map(resolve)
        : v;
  const config = structuredClone(template.config);
  const data = { ...((config.data as Record<string, unknown> | undefined) ?? {}) };
  data.train = data.train === undefined ? folderUri : resolve(data.train);
  if (data.validation !== undefined) data.validation = resolve(data.validation);
  config.data = data;
  if (args.previousAdapters) {
    const adapters = config.adapters;
    const variants: unknown[] = Array.isArray(adapters)
      ? adapters
      : adapters && typeof adapters === 'object'
        ? [{ name: String((adapters as Record<string, unknown>).type), ...(adapters as object) }]
        : [];
    if (variants.length > 0) {
      config.adapters = variants.map((v) => {
        if (!v || typeof v !== 'object') return v;
        const name = String((v as Record<string, unknown>).name);
        const previous = args.previousAdapters![name];
        return previous ? { ...(v as object), initFrom: previous } : v;
      });
    }
  }
  return { ...config, runId: args.runId };
}

export interface UploadTriggerDeps {
  readonly s3: Pick<S3Client, 'send'>;
  readonly sfn: Pick<SFNClient, 'send'>;
  readonly log: JsonLogger;
  readonly settings: UploadTriggerSettings;
}

async function readObject(s3: UploadTriggerDeps['s3'], object: S3ObjectRef): Promise<string | null> {
  try {
    const r = await s3.send(
      new GetObjectCommand({ Bucket: object.bucket, Key: object.key, VersionId: object.versionId }),
    );
    return (await r.Body?.transformToString('utf8')) ?? '';
  } catch (err) {
    const name = (err as Error).name;
    if (name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchVersion') return null;
    throw err;
  }
}

/**
 * The adapters (variant name → URI) of the newest succeeded retraining run of `dataset` that has an adapter for
 * any of `variants`, or null when there is none. Step Functions lists executions newest first; a retraining run's
 * name is `retrain-<dataset>-<16 hex>` and is also its runId, so its adapters are at
 * `runs/<runId>/variants/<name>/adapter/` in the artifact bucket, complete when their `_COMPLETE` marker exists
 * (run layout, lib/pipeline/run-layout.ts).
 */
export async function previousAdapters(
  deps: Pick<UploadTriggerDeps, 's3' | 'sfn'>,
  args: { stateMachineArn: string; bucket: string; dataset: string; variants: readonly string[] },
): Promise<{ runId: string; adapters: Record<string, string> } | null> {
  const name = new RegExp(`^${RETRAIN_PREFIX}${args.dataset}-[0-9a-f]{16}$`);
  let nextToken: string | undefined;
  do {
    const page = await deps.sfn.send(
      new ListExecutionsCommand({
        stateMachineArn: args.stateMachineArn,
        statusFilter: 'SUCCEEDED',
        maxResults: 100,
        nextToken,
      }),
    );
    for (const e of page.executions ?? []) {
      if (!e.name || !name.test(e.name)) continue;
      const adapters: Record<string, string> = {};
      for (const variant of args.variants) {
        const adapter = `runs/${e.name}/variants/${variant}/adapter`;
        if (await objectExists(deps.s3, args.bucket, `${adapter}/${COMPLETE_MARKER}`)) {
          adapters[variant] = `s3://${args.bucket}/${adapter}`;
        }
      }
      if (Object.keys(adapters).length > 0) return { runId: e.name, adapters };
    }
    nextToken = page.nextToken;
  } while (nextToken);
  return null;
}

async function objectExists(s3: UploadTriggerDeps['s3'], bucket: string, key: string): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    const name = (err as Error).name;
    if (name === 'NotFound' || name === 'NoSuchKey') return false;
    throw err;
  }
}

/** The variant names a template's config will produce (a single adapter config is named after its type). */
export function templateVariantNames(config: Record<string, unknown>): string[] {
  const adapters = config.adapters;
  if (Array.isArray(adapters)) {
    return adapters.flatMap((v) =>
      v && typeof v === 'object' && typeof v.name === 'string' ? [v.name as string] : [],
    );
  }
  const type =
    adapters && typeof adapters === 'object' ? (adapters as Record<string, unknown>).type : undefined;
  return typeof type === 'string' ? [type] : [];
}

async function startExecution(
  deps: UploadTriggerDeps,
  key: string,
  executionName: string,
  input: Record<string, unknown>,
): Promise<UploadOutcome> {
  try {
    const r = await deps.sfn.send(
      new StartExecutionCommand({
        stateMachineArn: deps.settings.stateMachineArn,
        name: executionName,
        input: JSON.stringify(input),
      }),
    );
    deps.log('info', 'execution started', { key, executionName, executionArn: r.executionArn });
    return { outcome: 'started', executionName, key, executionArn: r.executionArn };
  } catch (err) {
    if ((err as Error).name === 'ExecutionAlreadyExists') {
      deps.log('info', 'duplicate event: the execution for this upload already exists', {
        key,
        executionName,
      });
      return { outcome: 'duplicate', executionName, key };
    }
    throw err;
  }
}

function reject(deps: UploadTriggerDeps, key: string, reason: string): UploadOutcome {
  deps.log('error', 'upload rejected', { key, reason });
  return { outcome: 'rejected', reason, key };
}

/**
 * Handles one "Object Created" event: ignores it, rejects it (logged at error level: nothing to start), or starts
 * one execution. Throws only on AWS errors (S3 reads, Step Functions), so that Lambda retries them and sends the
 * event to the dead-letter queue when they persist.
 */
export async function handleUpload(
  event: ObjectCreatedEvent,
  deps: UploadTriggerDeps,
): Promise<UploadOutcome> {
  const action = classifyUpload(event, deps.settings);
  if (action.kind === 'ignore') {
    deps.log('info', 'event ignored', { reason: action.reason, key: action.key });
    return { outcome: 'ignored', reason: action.reason, key: action.key };
  }
  const { key } = action.object;
  if (action.kind === 'run-config') {
    const text = await readObject(deps.s3, action.object);
    if (text === null) return reject(deps, key, 'the object is gone (deleted before it was read)');
    let config: unknown;
    try {
      config = JSON.parse(text);
    } catch (err) {
      return reject(deps, key, `not valid JSON (${(err as Error).message}); upload a run config`);
    }
    if (!config || typeof config !== 'object' || Array.isArray(config)) {
      return reject(deps, key, 'a run config must be a JSON object');
    }
    const own = (config as { runId?: unknown }).runId;
    if (typeof own === 'string' && RUN_ID_PATTERN.test(own)) {
      // The config names its run (uploading it again resumes that run): the execution is `<runId>--u<hash>`,
      // still one per upload, and `moka status <runId>` finds it.
      return startExecution(
        deps,
        key,
        resumedRunExecutionName(own, action.executionName),
        config as Record<string, unknown>,
      );
    }
    // Without a runId the execution name is the runId (an invalid runId is left for validate-run to report).
    return startExecution(deps, key, action.executionName, { ...config, runId: own ?? action.executionName });
  }
  const templateKey = `${deps.settings.triggersPrefix}${action.dataset}.json`;
  const templateText = await readObject(deps.s3, { bucket: action.object.bucket, key: templateKey });
  if (templateText === null) {
    return reject(
      deps,
      key,
      `no retraining template s3://${action.object.bucket}/${templateKey}; upload one (docs/deploy.md)`,
    );
  }
  let template: RetrainTemplate;
  try {
    template = parseRetrainTemplate(templateText, `s3://${action.object.bucket}/${templateKey}`);
  } catch (err) {
    return reject(deps, key, (err as Error).message);
  }
  let previous: Awaited<ReturnType<typeof previousAdapters>> = null;
  if (template.initFromPrevious) {
    previous = await previousAdapters(deps, {
      stateMachineArn: deps.settings.stateMachineArn,
      bucket: action.object.bucket,
      dataset: action.dataset,
      variants: templateVariantNames(template.config),
    });
    deps.log(
      'info',
      previous ? 'retraining from the previous adapters' : 'no previous succeeded run: training from scratch',
      {
        dataset: action.dataset,
        previousRunId: previous?.runId,
        adapters: previous?.adapters,
      },
    );
  }
  const config = buildRetrainConfig(template, {
    runId: action.executionName,
    bucket: action.object.bucket,
    folder: action.folder,
    previousAdapters: previous?.adapters,
  });
  return startExecution(deps, key, action.executionName, config);
}
