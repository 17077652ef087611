import { GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  ExecutionAlreadyExists,
  ListExecutionsCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { readFileSync } from 'node:fs';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { parseRunConfig } from '../../lib/pipeline/run-config.ts';
import {
  buildRetrainConfig,
  classifyUpload,
  decodeS3Key,
  executionNameFor,
  handleUpload,
  parseRetrainTemplate,
  type ObjectCreatedEvent,
  type UploadTriggerDeps,
} from '../../lib/pipeline/upload-trigger.ts';

const BUCKET = 'moka-artifacts';
const SM = 'arn:aws:states:us-east-1:123456789012:stateMachine:MokaPipeline';
const settings = {
  stateMachineArn: SM,
  bucket: BUCKET,
  runsIncomingPrefix: 'runs-incoming/',
  datasetsPrefix: 'datasets/',
  triggersPrefix: 'triggers/',
};

function event(
  key: string,
  extra: { version?: string; etag?: string; bucket?: string } = {},
): ObjectCreatedEvent {
  return {
    source: 'aws.s3',
    'detail-type': 'Object Created',
    detail: {
      bucket: { name: extra.bucket ?? BUCKET },
      object: {
        key,
        etag: extra.etag ?? 'd41d8cd98f00b204e9800998ecf8427e',
        'version-id': extra.version,
        sequencer: '00617F0',
      },
      reason: 'PutObject',
    },
  };
}

// The part of GetObject's streaming body the trigger reads.
const body = (text: string) => ({ transformToString: async () => text }) as never;

const s3 = mockClient(S3Client);
const sfn = mockClient(SFNClient);
const lines: Record<string, unknown>[] = [];
const deps: UploadTriggerDeps = {
  s3: new S3Client({ region: 'us-east-1' }),
  sfn: new SFNClient({ region: 'us-east-1' }),
  log: (level, msg, fields) => lines.push({ level, msg, ...fields }),
  settings,
};

const runConfig = {
  model: 's3://moka-artifacts/models/tiny',
  adapters: { type: 'moka', r: 2 },
  data: { train: 's3://moka-artifacts/data/train.jsonl' },
};

beforeEach(() => {
  s3.reset();
  sfn.reset();
  lines.length = 0;
});
afterAll(() => {
  s3.restore();
  sfn.restore();
});

describe('classifyUpload', () => {
  it('ignores keys the pipeline writes under runs/, keys outside the watched prefixes, and other events', () => {
    for (const key of [
      'runs/r1/config.json',
      'runs/r1/variants/moka/checkpoints/step-10/adapter.safetensors',
      'models/tiny/config.json',
    ]) {
      expect(classifyUpload(event(key), settings).kind).toBe('ignore');
    }
    expect(classifyUpload({ ...event('runs-incoming/a.json'), source: 'aws.ec2' }, settings).kind).toBe(
      'ignore',
    );
    expect(classifyUpload(event('runs-incoming/a.json', { bucket: 'other' }), settings).kind).toBe('ignore');
    // Only <prefix><name>.json starts a run, and only _READY commits a data set.
    expect(classifyUpload(event('runs-incoming/notes.txt'), settings).kind).toBe('ignore');
    expect(classifyUpload(event('runs-incoming/sub/a.json'), settings).kind).toBe('ignore');
    expect(classifyUpload(event('datasets/support/2026-11/train.jsonl'), settings).kind).toBe('ignore');
    expect(classifyUpload(event('datasets/_READY'), settings).kind).toBe('ignore');
    expect(classifyUpload(event('datasets/bad.name/_READY'), settings).kind).toBe('ignore');
  });

  it('decodes URL-encoded keys', () => {
    expect(decodeS3Key('runs-incoming/my+run%281%29.json')).toBe('runs-incoming/my run(1).json');
    expect(decodeS3Key('datasets/a/100%/x')).toBe('datasets/a/100%/x'); // not encoded: kept
    const a = classifyUpload(event('datasets/support/v%3D2/_READY'), settings);
    expect(a).toMatchObject({ kind: 'retrain', dataset: 'support', folder: 'datasets/support/v=2/' });
    const b = classifyUpload(event('runs-incoming/my+run.json'), settings);
    expect(b).toMatchObject({ kind: 'run-config', object: { key: 'runs-incoming/my run.json' } });
    if (b.kind === 'run-config') expect(b.executionName).toMatch(/^my-run-[0-9a-f]{16}$/);
  });

  it('names executions deterministically: ≤ 80 characters of [A-Za-z0-9_-], by key and version (or ETag)', () => {
    const o = { bucket: BUCKET, key: 'runs-incoming/x.json', versionId: 'v1', etag: 'e1' };
    const name = executionNameFor('x'.repeat(200) + ' ü/:', o);
    expect(name.length).toBeLessThanOrEqual(80);
    expect(name).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(executionNameFor('x', o)).toBe(executionNameFor('x', { ...o }));
    expect(executionNameFor('x', o)).not.toBe(executionNameFor('x', { ...o, versionId: 'v2' }));
    const unversioned = { bucket: BUCKET, key: 'k', etag: 'e1' };
    expect(executionNameFor('x', unversioned, 's1')).not.toBe(
      executionNameFor('x', { ...unversioned, etag: 'e2' }, 's1'),
    );
  });
});

describe('handleUpload', () => {
  it('starts the uploaded run config, with the execution name as its runId', async () => {
    s3.on(GetObjectCommand, { Bucket: BUCKET, Key: 'runs-incoming/exp1.json', VersionId: 'v7' }).resolves({
      Body: body(JSON.stringify(runConfig)),
    });
    sfn.on(StartExecutionCommand).resolves({ executionArn: `${SM}:x`, startDate: new Date() });
    const r = await handleUpload(event('runs-incoming/exp1.json', { version: 'v7' }), deps);
    expect(r.outcome).toBe('started');
    const calls = sfn.commandCalls(StartExecutionCommand);
    expect(calls).toHaveLength(1);
    const args = calls[0]!.args[0].input;
    expect(args.stateMachineArn).toBe(SM);
    expect(args.name).toMatch(/^exp1-[0-9a-f]{16}$/);
    expect(JSON.parse(args.input!)).toEqual({ ...runConfig, runId: args.name });
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'execution started', executionName: args.name });
  });

  it('keeps a runId the uploaded config sets (re-uploading it resumes that run), naming the execution <runId>--u<hash>', async () => {
    s3.on(GetObjectCommand).callsFake(async () => ({
      Body: body(JSON.stringify({ ...runConfig, runId: 'exp-42' })),
    }));
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn' });
    await handleUpload(event('runs-incoming/exp1.json', { version: 'v1' }), deps);
    await handleUpload(event('runs-incoming/exp1.json', { version: 'v2' }), deps); // uploaded again: resume
    const [first, second] = sfn.commandCalls(StartExecutionCommand).map((c) => c.args[0].input);
    expect(JSON.parse(first!.input!).runId).toBe('exp-42');
    expect(first!.name).toMatch(/^exp-42--u[0-9a-f]{16}$/);
    expect(second!.name).toMatch(/^exp-42--u[0-9a-f]{16}$/);
    expect(second!.name).not.toBe(first!.name);
  });

  it('a duplicate event starts one execution: the second StartExecution is ExecutionAlreadyExists, a success', async () => {
    s3.on(GetObjectCommand).resolves({ Body: body(JSON.stringify(runConfig)) });
    const started = new Set<string>();
    sfn.on(StartExecutionCommand).callsFake((input: { name: string }) => {
      if (started.has(input.name)) throw new ExecutionAlreadyExists({ message: 'exists', $metadata: {} });
      started.add(input.name);
      return { executionArn: `${SM}:${input.name}` };
    });
    const e = event('runs-incoming/exp1.json', { version: 'v1' });
    const first = await handleUpload(e, deps);
    s3.on(GetObjectCommand).resolves({ Body: body(JSON.stringify(runConfig)) }); // a fresh stream
    const second = await handleUpload(structuredClone(e), deps);
    expect(first.outcome).toBe('started');
    expect(second).toMatchObject({ outcome: 'duplicate' });
    expect(started.size).toBe(1);
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(2);
  });

  it('ignores pipeline-written keys without touching S3 or Step Functions', async () => {
    const r = await handleUpload(event('runs/exp1-abc/variants/moka/adapter/_COMPLETE'), deps);
    expect(r.outcome).toBe('ignored');
    expect(s3.calls()).toHaveLength(0);
    expect(sfn.calls()).toHaveLength(0);
  });

  it('rejects (logs, starts nothing) an upload that is not JSON, and a data set without a template', async () => {
    s3.on(GetObjectCommand, { Key: 'runs-incoming/bad.json' }).resolves({ Body: body('{"model": ') });
    const r = await handleUpload(event('runs-incoming/bad.json'), deps);
    expect(r).toMatchObject({ outcome: 'rejected' });
    expect(lines.at(-1)).toMatchObject({ level: 'error', msg: 'upload rejected' });
    s3.on(GetObjectCommand, { Key: 'triggers/support.json' }).rejects(
      Object.assign(new Error('no'), { name: 'NoSuchKey' }),
    );
    const t = await handleUpload(event('datasets/support/_READY'), deps);
    expect(t).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringContaining('triggers/support.json'),
    });
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(0);
  });

  it('rethrows AWS errors so Lambda retries them', async () => {
    s3.on(GetObjectCommand).rejects(Object.assign(new Error('slow down'), { name: 'SlowDown' }));
    await expect(handleUpload(event('runs-incoming/a.json'), deps)).rejects.toThrow('slow down');
  });

  it('a retraining upload builds its run config from the template, the new data and the previous adapters', async () => {
    const template = {
      initFromPrevious: true,
      config: {
        model: 's3://moka-artifacts/models/tiny',
        adapters: [
          { name: 'moka', type: 'moka', r: 2 },
          { name: 'lora', type: 'lora', r: 4 },
        ],
        data: {
          train: 'train.jsonl',
          validation: ['./val.jsonl', 's3://other-bucket/fixed.jsonl'],
          format: 'alpaca',
        },
        training: { maxSteps: 5 },
      },
    };
    s3.on(GetObjectCommand, { Bucket: BUCKET, Key: 'triggers/support.json' }).resolves({
      Body: body(JSON.stringify(template)),
    });
    const prevName = 'retrain-support-0123456789abcdef';
    sfn.on(ListExecutionsCommand).resolves({
      executions: [
        // newest first: a run of another data set whose name starts the same way, then the one we want
        {
          name: 'retrain-support-x-0123456789abcdef',
          executionArn: `${SM}:other`,
          stateMachineArn: SM,
          status: 'SUCCEEDED',
          startDate: new Date(),
        },
        {
          name: prevName,
          executionArn: `${SM}:${prevName}`,
          stateMachineArn: SM,
          status: 'SUCCEEDED',
          startDate: new Date(),
        },
      ],
    });
    // Only the moka adapter of the previous run is complete.
    s3.on(HeadObjectCommand).rejects(Object.assign(new Error('not found'), { name: 'NotFound' }));
    s3.on(HeadObjectCommand, {
      Bucket: BUCKET,
      Key: `runs/${prevName}/variants/moka/adapter/_COMPLETE`,
    }).resolves({});
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn' });
    const r = await handleUpload(event('datasets/support/2026-11-30/_READY', { version: 'v3' }), deps);
    expect(r.outcome).toBe('started');
    // The look-alike name of another data set was skipped: only the previous run's two adapters were looked up.
    expect(s3.commandCalls(HeadObjectCommand).map((c) => c.args[0].input.Key)).toEqual([
      `runs/${prevName}/variants/moka/adapter/_COMPLETE`,
      `runs/${prevName}/variants/lora/adapter/_COMPLETE`,
    ]);
    const start = sfn.commandCalls(StartExecutionCommand)[0]!.args[0].input;
    expect(start.name).toMatch(/^retrain-support-[0-9a-f]{16}$/);
    const folder = `s3://${BUCKET}/datasets/support/2026-11-30/`;
    expect(JSON.parse(start.input!)).toEqual({
      ...template.config,
      runId: start.name,
      adapters: [
        {
          name: 'moka',
          type: 'moka',
          r: 2,
          initFrom: `s3://${BUCKET}/runs/${prevName}/variants/moka/adapter`,
        },
        { name: 'lora', type: 'lora', r: 4 }, // no previous adapter of this name: trained from scratch
      ],
      data: {
        train: `${folder}train.jsonl`,
        validation: [`${folder}val.jsonl`, 's3://other-bucket/fixed.jsonl'],
        format: 'alpaca',
      },
    });
  });
});

describe('buildRetrainConfig', () => {
  it('takes the whole folder as training data when the template names none, and names a single adapter', () => {
    const c = buildRetrainConfig(
      { config: { model: 'm', adapters: { type: 'lora', r: 8 } } },
      {
        runId: 'retrain-a-0000000000000000',
        bucket: 'b',
        folder: 'datasets/a/',
        previousAdapters: { lora: 's3://b/prev' },
      },
    );
    expect(c).toEqual({
      model: 'm',
      runId: 'retrain-a-0000000000000000',
      adapters: [{ name: 'lora', type: 'lora', r: 8, initFrom: 's3://b/prev' }],
      data: { train: 's3://b/datasets/a/' },
    });
  });
});

describe('examples/aws/triggers-support.json', () => {
  it('builds a valid run config for an upload (the run-config schema accepts it)', () => {
    const text = readFileSync(
      new URL('../../examples/aws/triggers-support.json', import.meta.url),
      'utf8',
    ).replaceAll('BUCKET', BUCKET);
    const template = parseRetrainTemplate(text, 'examples/aws/triggers-support.json');
    const config = buildRetrainConfig(template, {
      runId: 'retrain-support-0123456789abcdef',
      bucket: BUCKET,
      folder: 'datasets/support/2026-11-30/',
      previousAdapters: {
        moka: `s3://${BUCKET}/runs/retrain-support-fedcba9876543210/variants/moka/adapter`,
      },
    });
    const parsed = parseRunConfig(config, 'retraining run');
    expect(parsed.data.train).toBe(`s3://${BUCKET}/datasets/support/2026-11-30/train.jsonl`);
    expect(parsed.adapters[0]).toMatchObject({
      name: 'moka',
      initFrom: `s3://${BUCKET}/runs/retrain-support-fedcba9876543210/variants/moka/adapter`,
    });
    expect(parsed.runId).toBe('retrain-support-0123456789abcdef');
  });
});
