/**
 * The deployable stack's options, read from CDK context (`cdk.json` or `cdk deploy -c key=value`) and checked
 * before anything is built: each bad value is a one-line UserError naming the context key, what it got and
 * what would be accepted. Values given with `-c` arrive as strings; values in cdk.json keep their JSON type;
 * both are accepted.
 *
 * Each option, its default and its meaning are listed in docs/deploy.md ("Context options").
 */
import { UserError } from '../errors.ts';
import { DEFAULT_STACK_NAME } from '../pipeline/stack-outputs.ts';
import { GPU_INSTANCE_TYPES, gpuInstanceType, typesThatFit, usableMemoryGiB } from './gpu-instance-types.ts';

/** The pipeline's stages that run as Batch jobs. */
export const BATCH_STAGES = ['quantize', 'train', 'eval', 'report'] as const;
export type BatchStage = (typeof BATCH_STAGES)[number];

/** One stage's Batch job: its reservation and attempt timeout. */
export interface StageJobOptions {
  /** GPUs per job; 0 for a CPU job. */
  readonly gpus: number;
  readonly vcpus: number;
  readonly memoryGiB: number;
  /** `/dev/shm` size in GiB (Docker's default of 64 MiB breaks multi-process loaders). */
  readonly sharedMemoryGiB: number;
  /** Attempt timeout in minutes (Batch sends SIGTERM, then SIGKILL 30 s later; timed-out jobs are not retried). */
  readonly timeoutMinutes: number;
}

export interface PipelineStackOptions {
  readonly stackName: string;
  /** GPU instance types of both compute environments. */
  readonly instanceTypes: readonly string[];
  /** Spot compute environment first, on-demand second; false: on-demand only. */
  readonly spot: boolean;
  /** Upper bound on the vCPUs each compute environment runs at once (the main cost cap). */
  readonly maxVcpus: number;
  /** Jobs at the head of the queue that stay RUNNABLE this long are cancelled (Batch allows 10–1440 min). */
  readonly runnableTimeoutMinutes: number;
  /** Batch attempts per job (spot reclaims and image pulls are retried; failing programs are not). */
  readonly retryAttempts: number;
  readonly jobs: Readonly<Record<BatchStage, StageJobOptions>>;
  /** Adapter variants trained at once. */
  readonly variantConcurrency: number;
  /** Execution timeout in minutes; at least what the stages may take with every retry. */
  readonly executionTimeoutMinutes: number;
  /** Use this existing bucket instead of creating one. */
  readonly bucketName?: string;
  /** Encrypt the new bucket with a customer-managed KMS key instead of S3-managed keys. */
  readonly kms: boolean;
  /** Prefix where an uploaded run config starts that run. */
  readonly runsIncomingPrefix: string;
  /** Prefix under which `<name>/…/_READY` starts a retraining run of data set `<name>`. */
  readonly datasetsPrefix: string;
  /** Prefix holding the retraining templates `<name>.json`. */
  readonly triggersPrefix: string;
  /** Days after which non-current versions (old checkpoints the stages deleted, overwritten files) expire. */
  readonly oldVersionExpirationDays: number;
  /** CloudWatch log retention in days (one of CloudWatch's allowed values). */
  readonly logRetentionDays: number;
  /** E-mail address subscribed to the failed-execution topic. */
  readonly alarmEmail?: string;
}

/** The prefix every run's artifacts are written under; the trigger must never watch it. */
export const RUNS_PREFIX = 'runs/';
/**
 * Every prefix the pipeline and the CLI write: runs, the shared quantized-model cache (lib/pipeline/run-layout.ts)
 * and `moka start`'s uploads (lib/pipeline/deployed-run.ts). None may be watched.
 */
export const WRITTEN_PREFIXES = [RUNS_PREFIX, 'cache/', 'inputs/'];

/** CloudWatch Logs' allowed retention periods in days. */
const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

export const DEFAULT_INSTANCE_TYPES = ['g5.xlarge', 'g5.2xlarge', 'g6.xlarge', 'g6.2xlarge', 'g4dn.xlarge'];

/** The context keys this stack reads; any other key that is not CDK's own is reported as a typo. */
export const CONTEXT_KEYS = [
  'stackName',
  'instanceTypes',
  'gpusPerJob',
  'jobVcpus',
  'jobMemoryGiB',
  'sharedMemoryGiB',
  'spot',
  'maxVcpus',
  'runnableTimeoutMinutes',
  'retryAttempts',
  'quantizeTimeoutMinutes',
  'trainTimeoutMinutes',
  'evalTimeoutMinutes',
  'reportTimeoutMinutes',
  'variantConcurrency',
  'executionTimeoutMinutes',
  'bucketName',
  'kms',
  'runsIncomingPrefix',
  'datasetsPrefix',
  'triggersPrefix',
  'oldVersionExpirationDays',
  'logRetentionDays',
  'alarmEmail',
] as const;
export type ContextKey = (typeof CONTEXT_KEYS)[number];

type Context = Readonly<Record<string, unknown>>;

function bad(key: string, value: unknown, want: string): UserError {
  return new UserError(`context ${key}=${JSON.stringify(value)} is invalid: ${want}`);
}

function integer(ctx: Context, key: ContextKey, def: number, min: number, max: number): number {
  const v = ctx[key];
  if (v === undefined) return def;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw bad(key, v, `give an integer from ${min} to ${max}`);
  return n;
}

function boolean(ctx: Context, key: ContextKey, def: boolean): boolean {
  const v = ctx[key];
  if (v === undefined) return def;
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw bad(key, v, 'give true or false');
}

function text(ctx: Context, key: ContextKey): string | undefined {
  const v = ctx[key];
  if (v === undefined || v === '') return undefined;
  if (typeof v !== 'string') throw bad(key, v, 'give a string');
  return v;
}

/** A key prefix: non-empty, no leading slash, ends with "/", and not inside (or around) the runs/ prefix. */
function prefix(ctx: Context, key: ContextKey, def: string): string {
  const v = text(ctx, key) ?? def;
  if (!/^[A-Za-z0-9][A-Za-z0-9!_.*'()-]*(\/[A-Za-z0-9!_.*'()-]+)*\/$/.test(v)) {
    throw bad(
      key,
      v,
      'give an S3 key prefix such as "incoming/" (letters, digits, -_.!*\'(), ending with "/")',
    );
  }
  const written = WRITTEN_PREFIXES.find((w) => v.startsWith(w) || w.startsWith(v));
  if (written) {
    throw bad(
      key,
      v,
      `the pipeline writes under "${written}" (and ${WRITTEN_PREFIXES.filter((w) => w !== written).join(', ')}), so watching it could retrigger runs`,
    );
  }
  return v;
}

function instanceTypes(ctx: Context): string[] {
  const v = ctx.instanceTypes;
  if (v === undefined) return DEFAULT_INSTANCE_TYPES;
  const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',').map((s) => s.trim()) : null;
  if (!list || list.length === 0 || list.some((s) => typeof s !== 'string' || s === '')) {
    throw bad('instanceTypes', v, 'give a comma-separated list such as "g5.xlarge,g6.xlarge"');
  }
  for (const name of list as string[]) {
    if (!GPU_INSTANCE_TYPES[name]) {
      throw bad(
        'instanceTypes',
        v,
        `"${name}" is not a known GPU instance type (${Object.keys(GPU_INSTANCE_TYPES).join(', ')})`,
      );
    }
  }
  return [...new Set(list as string[])];
}

/**
 * Reads and checks the stack's options from CDK context. Defaults fit the smallest listed instance that has
 * the GPUs a job asks for, so a default job never waits RUNNABLE for an instance that cannot exist.
 *
 * @throws UserError (one line) for a bad value, naming the key; for a GPU/vCPU/memory reservation that no listed
 *   instance type offers, naming the reservation and each listed type; for an execution timeout shorter than the
 *   stages' worst case, naming both.
 */
export function parseStackOptions(ctx: Context): PipelineStackOptions {
  const types = instanceTypes(ctx);
  const gpus = integer(ctx, 'gpusPerJob', 1, 1, 8);
  // Defaults come from the smallest listed instance type that has enough GPUs.
  const withGpus = types
    .map((name) => ({ name, type: gpuInstanceType(name) }))
    .filter((x) => x.type.gpus >= gpus)
    .sort((a, b) => a.type.vcpus - b.type.vcpus || a.type.memoryGiB - b.type.memoryGiB);
  if (withGpus.length === 0) {
    const offers = types.map((name) => `${name} has ${gpuInstanceType(name).gpus}`).join(', ');
    throw new UserError(
      `context gpusPerJob=${gpus} is more GPUs than any listed instance type offers (${offers}); ` +
        `lower gpusPerJob or add an instance type with ${gpus} GPUs to instanceTypes`,
    );
  }
  const smallest = withGpus[0]!.type;
  const vcpus = integer(ctx, 'jobVcpus', smallest.vcpus, 1, 192);
  const memoryGiB = integer(ctx, 'jobMemoryGiB', usableMemoryGiB(smallest), 1, 2048);
  const sharedMemoryGiB = integer(ctx, 'sharedMemoryGiB', Math.max(1, Math.floor(memoryGiB / 2)), 1, 2048);
  if (sharedMemoryGiB > memoryGiB) {
    throw bad(
      'sharedMemoryGiB',
      ctx.sharedMemoryGiB,
      `/dev/shm counts against the job's memory; give at most jobMemoryGiB (${memoryGiB})`,
    );
  }
  const gpuJob = { gpus, vcpus, memoryGiB };
  typesThatFit(types, gpuJob, `a GPU job (context gpusPerJob, jobVcpus, jobMemoryGiB)`);

  const spot = boolean(ctx, 'spot', true);
  const maxVcpus = integer(ctx, 'maxVcpus', 64, 1, 100_000);
  if (maxVcpus < vcpus) {
    throw bad(
      'maxVcpus',
      ctx.maxVcpus ?? maxVcpus,
      `a job needs ${vcpus} vCPUs (jobVcpus), so maxVcpus must be at least that`,
    );
  }
  const runnableTimeoutMinutes = integer(ctx, 'runnableTimeoutMinutes', 60, 10, 1440);
  const retryAttempts = integer(ctx, 'retryAttempts', 5, 1, 10);
  const timeout = (key: ContextKey, def: number) => integer(ctx, key, def, 1, 14 * 24 * 60);
  const report: StageJobOptions = {
    gpus: 0,
    vcpus: 2,
    memoryGiB: 4,
    sharedMemoryGiB: 1,
    timeoutMinutes: timeout('reportTimeoutMinutes', 30),
  };
  typesThatFit(types, report, 'the report job (2 vCPU, 4 GiB)');
  const gpuStage = (key: ContextKey, def: number): StageJobOptions => ({
    ...gpuJob,
    sharedMemoryGiB,
    timeoutMinutes: timeout(key, def),
  });
  const jobs = {
    quantize: gpuStage('quantizeTimeoutMinutes', 120),
    train: gpuStage('trainTimeoutMinutes', 24 * 60),
    eval: gpuStage('evalTimeoutMinutes', 6 * 60),
    report,
  };
  // Each stage may wait RUNNABLE up to the limit, then run every attempt to its timeout; one wave of variants.
  const worstCase =
    BATCH_STAGES.reduce(
      (sum, s) => sum + runnableTimeoutMinutes + retryAttempts * jobs[s].timeoutMinutes,
      0,
    ) + 60;
  const executionTimeoutMinutes = integer(ctx, 'executionTimeoutMinutes', worstCase, 1, 365 * 24 * 60);
  if (executionTimeoutMinutes < worstCase) {
    throw new UserError(
      `context executionTimeoutMinutes=${executionTimeoutMinutes} is shorter than the stages' worst case of ` +
        `${worstCase} minutes (runnableTimeoutMinutes + retryAttempts × each stage's timeout, plus 60); the execution ` +
        `would time out while Batch is still retrying: raise it or lower the stage timeouts or retryAttempts`,
    );
  }
  const alarmEmail = text(ctx, 'alarmEmail');
  if (alarmEmail !== undefined && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(alarmEmail)) {
    throw bad('alarmEmail', alarmEmail, 'give an e-mail address');
  }
  const bucketName = text(ctx, 'bucketName');
  if (bucketName !== undefined && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucketName)) {
    throw bad(
      'bucketName',
      bucketName,
      'give an existing S3 bucket name (3–63 lowercase letters, digits, dots, hyphens)',
    );
  }
  const logRetentionDays = integer(ctx, 'logRetentionDays', 90, 1, 3653);
  if (!LOG_RETENTION_DAYS.includes(logRetentionDays)) {
    throw bad(
      'logRetentionDays',
      ctx.logRetentionDays,
      `CloudWatch accepts ${LOG_RETENTION_DAYS.join(', ')}`,
    );
  }
  const stackName = text(ctx, 'stackName') ?? DEFAULT_STACK_NAME;
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(stackName)) {
    throw bad(
      'stackName',
      stackName,
      'give a CloudFormation stack name (a letter, then letters, digits, hyphens)',
    );
  }
  const options: PipelineStackOptions = {
    stackName,
    instanceTypes: types,
    spot,
    maxVcpus,
    runnableTimeoutMinutes,
    retryAttempts,
    jobs,
    variantConcurrency: integer(ctx, 'variantConcurrency', 4, 1, 40),
    executionTimeoutMinutes,
    bucketName,
    kms: boolean(ctx, 'kms', false),
    runsIncomingPrefix: prefix(ctx, 'runsIncomingPrefix', 'runs-incoming/'),
    datasetsPrefix: prefix(ctx, 'datasetsPrefix', 'datasets/'),
    triggersPrefix: prefix(ctx, 'triggersPrefix', 'triggers/'),
    oldVersionExpirationDays: integer(ctx, 'oldVersionExpirationDays', 7, 1, 3650),
    logRetentionDays,
    alarmEmail,
  };
  const prefixes = [options.runsIncomingPrefix, options.datasetsPrefix, options.triggersPrefix];
  for (const a of prefixes) {
    for (const b of prefixes) {
      if (a !== b && b.startsWith(a)) {
        throw new UserError(
          `context prefixes "${a}" and "${b}" overlap; give runsIncomingPrefix, datasetsPrefix and triggersPrefix separate folders`,
        );
      }
    }
  }
  if (new Set(prefixes).size !== prefixes.length) {
    throw new UserError(
      `context prefixes must differ: runsIncomingPrefix, datasetsPrefix and triggersPrefix are ${prefixes.join(', ')}`,
    );
  }
  return options;
}

/** The context values that this app reads, from an App's node (`app.node.tryGetContext`). */
export function readContext(get: (key: string) => unknown): Record<string, unknown> {
  const ctx: Record<string, unknown> = {};
  for (const key of CONTEXT_KEYS) {
    const v = get(key);
    if (v !== undefined) ctx[key] = v;
  }
  return ctx;
}
