/**
 * `moka start | status | logs | fetch` against a deployed stack, with every AWS client mocked
 * (aws-sdk-client-mock; S3 is an in-memory bucket): what is uploaded and started, what status shows, which
 * log streams are read, and what fetch writes.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { CloudWatchLogsClient, FilterLogEventsCommand } from '@aws-sdk/client-cloudwatch-logs';
import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { Command } from 'commander';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerStatus } from '../../bin/commands/status.ts';
import {
  fetchDeployedRun,
  printRunLogs,
  startDeployedRun,
  type LogLine,
} from '../../lib/pipeline/deployed-run.ts';
import {
  awsClients,
  describeDeployedStack,
  STACK_OUTPUTS,
  type DeployedStack,
} from '../../lib/pipeline/deployed-stack.ts';
import { fakeS3 } from '../helpers/fake-s3.ts';

const BUCKET = 'moka-artifacts-123';
const SM = 'arn:aws:states:eu-west-1:123456789012:stateMachine:PipelineStateMachine-abc';
const stack: DeployedStack = {
  name: 'MokaPipeline',
  region: 'eu-west-1',
  bucket: BUCKET,
  stateMachineArn: SM,
  jobLogGroup: 'MokaPipeline-JobLogs',
};
const execArn = (name: string) =>
  `arn:aws:states:eu-west-1:123456789012:execution:PipelineStateMachine-abc:${name}`;

const s3 = fakeS3();
const cfn = mockClient(CloudFormationClient);
const sfn = mockClient(SFNClient);
const logs = mockClient(CloudWatchLogsClient);
const clients = awsClients('eu-west-1');
let dir: string;

beforeEach(() => {
  s3.reset();
  cfn.reset();
  sfn.reset();
  logs.reset();
  dir = mkdtempSync(join(tmpdir(), 'moka-deployed-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));
afterAll(() => {
  s3.mock.restore();
  cfn.restore();
  sfn.restore();
  logs.restore();
});

describe('describeDeployedStack', () => {
  it("reads the stack's resources from its outputs", async () => {
    cfn.on(DescribeStacksCommand, { StackName: 'MokaPipeline' }).resolves({
      Stacks: [
        {
          StackName: 'MokaPipeline',
          StackStatus: 'CREATE_COMPLETE',
          CreationTime: new Date(),
          Outputs: [
            { OutputKey: STACK_OUTPUTS.bucket, OutputValue: BUCKET },
            { OutputKey: STACK_OUTPUTS.stateMachineArn, OutputValue: SM },
            { OutputKey: STACK_OUTPUTS.jobLogGroup, OutputValue: 'MokaPipeline-JobLogs' },
          ],
        },
      ],
    });
    expect(await describeDeployedStack(clients, 'MokaPipeline')).toEqual({
      ...stack,
      stateMachineLogGroup: undefined,
    });
  });

  it('says so in one line when the stack is missing or is not a moka stack', async () => {
    cfn
      .on(DescribeStacksCommand)
      .rejects(Object.assign(new Error('Stack with id Nope does not exist'), { name: 'ValidationError' }));
    await expect(describeDeployedStack(clients, 'Nope')).rejects.toThrow(
      /^stack Nope does not exist .*cdk deploy/,
    );
    cfn.on(DescribeStacksCommand).resolves({
      Stacks: [{ StackName: 'X', StackStatus: 'CREATE_COMPLETE', CreationTime: new Date(), Outputs: [] }],
    });
    await expect(describeDeployedStack(clients, 'X')).rejects.toThrow(
      `stack X has no output ${STACK_OUTPUTS.stateMachineArn}`,
    );
  });
});

describe('startDeployedRun', () => {
  const writeConfig = (extra: Record<string, unknown> = {}) => {
    mkdirSync(join(dir, 'data'));
    writeFileSync(join(dir, 'data', 'train.jsonl'), '{"instruction":"a","output":"b"}\n');
    mkdirSync(join(dir, 'more'));
    writeFileSync(join(dir, 'more', 'train.jsonl'), '{"instruction":"c","output":"d"}\n');
    const config = {
      model: 's3://models-bucket/tiny',
      adapters: [{ name: 'moka', type: 'moka' }],
      data: { train: 'data/train.jsonl', format: 'alpaca' },
      ...extra,
    };
    writeFileSync(join(dir, 'run.json'), JSON.stringify(config));
    return join(dir, 'run.json');
  };

  it('uploads the local data and the config under inputs/<runId>/ and starts the execution named <runId>', async () => {
    sfn
      .on(StartExecutionCommand)
      .callsFake((i: { name: string }) => ({ executionArn: execArn(i.name), startDate: new Date() }));
    const configPath = writeConfig();
    // Two local files of the same name stay apart.
    writeFileSync(
      configPath,
      JSON.stringify({
        ...JSON.parse(readFileSync(configPath, 'utf8')),
        data: { train: ['data/train.jsonl', 'more/train.jsonl'], format: 'alpaca' },
      }),
    );
    const r = await startDeployedRun(clients, stack, { configPath, runId: 'exp-1' });
    expect(r).toMatchObject({
      runId: 'exp-1',
      executionName: 'exp-1',
      resumed: false,
      configUri: `s3://${BUCKET}/inputs/exp-1/config.json`,
    });
    expect(r.consoleLink).toBe(
      `https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/${execArn('exp-1')}`,
    );
    expect(s3.text(BUCKET, 'inputs/exp-1/0-train.jsonl')).toBe('{"instruction":"a","output":"b"}\n');
    expect(s3.text(BUCKET, 'inputs/exp-1/1-train.jsonl')).toBe('{"instruction":"c","output":"d"}\n');
    const uploaded = JSON.parse(s3.text(BUCKET, 'inputs/exp-1/config.json')!);
    expect(uploaded).toMatchObject({
      runId: 'exp-1',
      model: 's3://models-bucket/tiny', // already in S3: kept
      data: {
        train: [`s3://${BUCKET}/inputs/exp-1/0-train.jsonl`, `s3://${BUCKET}/inputs/exp-1/1-train.jsonl`],
        format: 'alpaca',
      },
    });
    const start = sfn.commandCalls(StartExecutionCommand)[0]!.args[0].input;
    expect(start).toEqual({
      stateMachineArn: SM,
      name: 'exp-1',
      input: JSON.stringify({ configUri: r.configUri }),
    });
  });

  it('a runId started before gets a new execution name, which resumes the run', async () => {
    sfn
      .on(StartExecutionCommand)
      .callsFake(async (i: { name: string }) => ({ executionArn: execArn(i.name), startDate: new Date() }));
    sfn
      .on(StartExecutionCommand, { name: 'exp-1' })
      .rejects(new ExecutionAlreadyExists({ message: 'exists', $metadata: {} }));
    sfn.on(DescribeExecutionCommand).resolves({
      executionArn: execArn('exp-1'),
      name: 'exp-1',
      status: 'FAILED',
      startDate: new Date(),
      stateMachineArn: SM,
    });
    sfn.on(ListExecutionsCommand).resolves({ executions: [] });
    const r = await startDeployedRun(clients, stack, {
      configPath: writeConfig({ runId: 'exp-1' }),
      now: new Date(1_700_000_000_000),
    });
    expect(r).toMatchObject({
      runId: 'exp-1',
      resumed: true,
      executionName: `exp-1--r${(1_700_000_000_000).toString(36)}`,
    });
  });

  it('refuses to start a run that is still running', async () => {
    sfn.on(StartExecutionCommand).rejects(new ExecutionAlreadyExists({ message: 'exists', $metadata: {} }));
    sfn.on(DescribeExecutionCommand).resolves({
      executionArn: execArn('exp-1'),
      name: 'exp-1',
      status: 'RUNNING',
      startDate: new Date(),
      stateMachineArn: SM,
    });
    sfn.on(ListExecutionsCommand).resolves({ executions: [] });
    await expect(
      startDeployedRun(clients, stack, { configPath: writeConfig({ runId: 'exp-1' }) }),
    ).rejects.toThrow('run exp-1 is still running (execution exp-1)');
    expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(1);
  });

  it('refuses a bad config with every problem, and a missing local file, before uploading anything', async () => {
    writeFileSync(
      join(dir, 'bad.json'),
      JSON.stringify({ model: 's3://models-bucket/m', adapters: { type: 'nope' } }),
    );
    await expect(startDeployedRun(clients, stack, { configPath: join(dir, 'bad.json') })).rejects.toThrow(
      /invalid \(2 problems\)[\s\S]*adapters[\s\S]*data/,
    );
    writeFileSync(
      join(dir, 'missing.json'),
      JSON.stringify({
        model: 's3://models-bucket/m',
        adapters: { type: 'lora' },
        data: { train: 'nowhere.jsonl' },
      }),
    );
    await expect(startDeployedRun(clients, stack, { configPath: join(dir, 'missing.json') })).rejects.toThrow(
      'nowhere.jsonl (in',
    );
    expect(s3.objects.size).toBe(0);
    expect(sfn.calls()).toHaveLength(0);
  });
});

describe('moka status', () => {
  it('prints the execution, its running states and each stage, with the training step from metrics.jsonl', async () => {
    cfn.on(DescribeStacksCommand).resolves({
      Stacks: [
        {
          StackName: 'MokaPipeline',
          StackStatus: 'UPDATE_COMPLETE',
          CreationTime: new Date(),
          Outputs: [
            { OutputKey: STACK_OUTPUTS.bucket, OutputValue: BUCKET },
            { OutputKey: STACK_OUTPUTS.stateMachineArn, OutputValue: SM },
            { OutputKey: STACK_OUTPUTS.jobLogGroup, OutputValue: 'g' },
          ],
        },
      ],
    });
    sfn.on(DescribeExecutionCommand, { executionArn: execArn('exp-1') }).resolves({
      executionArn: execArn('exp-1'),
      name: 'exp-1',
      status: 'RUNNING',
      startDate: new Date('2026-11-30T06:00:00Z'),
      stateMachineArn: SM,
    });
    sfn.on(ListExecutionsCommand).resolves({ executions: [] });
    sfn.on(GetExecutionHistoryCommand).resolves({
      events: [
        {
          id: 1,
          type: 'TaskStateEntered',
          timestamp: new Date(),
          stateEnteredEventDetails: { name: 'ValidateRun' },
        },
        {
          id: 2,
          type: 'TaskStateExited',
          timestamp: new Date(),
          stateExitedEventDetails: { name: 'ValidateRun' },
        },
        {
          id: 3,
          type: 'ParallelStateEntered',
          timestamp: new Date(),
          stateEnteredEventDetails: { name: 'TrainAndEvaluate' },
        },
        {
          id: 4,
          type: 'TaskStateEntered',
          timestamp: new Date(),
          stateEnteredEventDetails: { name: 'Train' },
        },
      ],
    });
    s3.put(
      BUCKET,
      'runs/exp-1/status.json',
      JSON.stringify({
        runId: 'exp-1',
        status: 'RUNNING',
        variants: ['moka'],
        stages: {
          quantize: {
            stage: 'quantize',
            status: 'SUCCEEDED',
            startedAt: '2026-11-30T06:01:00Z',
            endedAt: '2026-11-30T06:05:00Z',
          },
          'train:moka': {
            stage: 'train',
            variant: 'moka',
            status: 'RUNNING',
            startedAt: '2026-11-30T06:06:00Z',
            detail: 'resumed from step 20',
          },
        },
      }),
    );
    s3.put(
      BUCKET,
      'runs/exp-1/variants/moka/metrics.jsonl',
      '{"step":41,"loss":2.5}\n{"step":42,"loss":2.25}\n',
    );
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
    try {
      const program = new Command().exitOverride();
      registerStatus(program);
      await program.parseAsync(['status', 'exp-1', '--stack', 'MokaPipeline', '--region', 'eu-west-1'], {
        from: 'user',
      });
    } finally {
      spy.mockRestore();
    }
    const text = out.join('');
    expect(text).toContain('execution  exp-1  RUNNING  started 2026-11-30T06:00:00.000Z');
    expect(text).toContain('running    TrainAndEvaluate, Train');
    expect(text).toMatch(/quantize\s+SUCCEEDED/);
    expect(text).toMatch(
      /train:moka\s+RUNNING\s+2026-11-30T06:06:00Z\s+step 42, loss 2\.2500; resumed from step 20/,
    );
  });
});

describe('printRunLogs', () => {
  it("reads finished jobs' streams from the history and running jobs' streams by runId, until the run ends", async () => {
    const T0 = Date.UTC(2026, 10, 30, 6);
    let polls = 0;
    sfn.on(DescribeExecutionCommand).callsFake(() => ({
      executionArn: execArn('exp-1'),
      name: 'exp-1',
      status: polls++ < 1 ? 'RUNNING' : 'SUCCEEDED',
      startDate: new Date(T0),
      stateMachineArn: SM,
    }));
    sfn.on(ListExecutionsCommand).resolves({ executions: [] });
    sfn.on(GetExecutionHistoryCommand).resolves({
      events: [
        {
          id: 7,
          type: 'TaskSucceeded',
          timestamp: new Date(),
          taskSucceededEventDetails: {
            resourceType: 'batch',
            resource: 'submitJob.sync',
            output: JSON.stringify({
              JobName: 'exp-1-Quantize',
              Container: { LogStreamName: 'quantize/default/aaa' },
              Attempts: [{ Container: { LogStreamName: 'quantize/default/aaa' } }],
            }),
          },
        },
      ],
    });
    logs
      .on(FilterLogEventsCommand)
      .callsFake(async (i: { logStreamNames?: string[]; filterPattern?: string; startTime?: number }) => ({
        events:
          i.filterPattern === '"exp-1"'
            ? [{ logStreamName: 'train/default/bbb', timestamp: T0 + 5, message: 'x' }]
            : [
                { logStreamName: 'train/default/bbb', timestamp: T0 + 20, message: '{"msg":"step 1"}\n' },
                { logStreamName: 'quantize/default/aaa', timestamp: T0 + 10, message: '{"msg":"quantized"}' },
              ].filter(
                (e) => i.logStreamNames?.includes(e.logStreamName) && e.timestamp >= (i.startTime ?? 0),
              ),
      }));
    // (the filterPattern search finds the running job's stream through a line that names the runId)
    const lines: LogLine[] = [];
    const status = await printRunLogs(clients, stack, 'exp-1', {
      follow: true,
      pollMs: 0,
      write: (l) => lines.push(l),
      sleep: async () => {},
    });
    expect(status).toBe('SUCCEEDED');
    // Two polls, each line once, oldest first.
    expect(lines.map((l) => `${l.stream} ${l.message}`)).toEqual([
      'quantize/default/aaa {"msg":"quantized"}',
      'train/default/bbb {"msg":"step 1"}',
    ]);
    // The search for running jobs' streams starts a minute before the execution did, not at the epoch.
    expect(logs.commandCalls(FilterLogEventsCommand)[0]!.args[0].input).toMatchObject({
      filterPattern: '"exp-1"',
      startTime: T0 - 60_000,
    });
    const streamCalls = logs
      .commandCalls(FilterLogEventsCommand)
      .filter((c) => c.args[0].input.logStreamNames);
    expect(streamCalls).toHaveLength(2);
    expect(new Set(streamCalls[0]!.args[0].input.logStreamNames)).toEqual(
      new Set(['quantize/default/aaa', 'train/default/bbb']),
    );
  });

  it('names an unknown run in one line', async () => {
    sfn.on(DescribeExecutionCommand).rejects(new ExecutionDoesNotExist({ message: 'no', $metadata: {} }));
    sfn.on(ListExecutionsCommand).resolves({ executions: [] });
    await expect(printRunLogs(clients, stack, 'nope', { follow: false, write: () => {} })).rejects.toThrow(
      'no execution of run nope in stack MokaPipeline',
    );
  });
});

describe('fetchDeployedRun', () => {
  const complete = (prefix: string, files: Record<string, string>) => {
    for (const [k, v] of Object.entries(files)) s3.put(BUCKET, `${prefix}/${k}`, v);
    s3.put(
      BUCKET,
      `${prefix}/_COMPLETE`,
      JSON.stringify({
        files: Object.entries(files).map(([key, v]) => ({ key, size: v.length })),
        completedAt: 'now',
      }),
    );
  };

  it('downloads the finished adapters and the report in the run layout; skips unfinished ones', async () => {
    s3.put(
      BUCKET,
      'runs/exp-1/status.json',
      JSON.stringify({ runId: 'exp-1', status: 'SUCCEEDED', variants: ['moka', 'lora'], stages: {} }),
    );
    s3.put(BUCKET, 'runs/exp-1/config.json', '{"runId":"exp-1"}');
    complete('runs/exp-1/variants/moka/adapter', {
      'adapter_config.json': '{"peft_type":"LOKR"}',
      'adapter_model.safetensors': 'ST',
    });
    s3.put(BUCKET, 'runs/exp-1/variants/lora/adapter/adapter_config.json', '{}'); // no marker: unfinished
    complete('runs/exp-1/report', { 'report.json': '{}', 'report.html': '<html></html>' });
    const out = join(dir, 'out');
    const r = await fetchDeployedRun(clients, stack, 'exp-1', out);
    expect(r.folders).toEqual([join(out, 'variants', 'moka', 'adapter'), join(out, 'report')]);
    expect(readFileSync(join(out, 'variants/moka/adapter/adapter_model.safetensors'), 'utf8')).toBe('ST');
    expect(readFileSync(join(out, 'report/report.html'), 'utf8')).toBe('<html></html>');
    expect(readFileSync(join(out, 'config.json'), 'utf8')).toBe('{"runId":"exp-1"}');
    expect(() => readFileSync(join(out, 'variants/lora/adapter/adapter_config.json'))).toThrow();
  });

  it('says when nothing is finished yet', async () => {
    s3.put(
      BUCKET,
      'runs/exp-2/status.json',
      JSON.stringify({ runId: 'exp-2', status: 'RUNNING', variants: ['moka'], stages: {} }),
    );
    await expect(fetchDeployedRun(clients, stack, 'exp-2', join(dir, 'o'))).rejects.toThrow(
      'run exp-2 has no finished adapter or report yet (status RUNNING)',
    );
    await expect(fetchDeployedRun(clients, stack, 'nope', join(dir, 'o'))).rejects.toThrow(
      'run nope has no status.json',
    );
  });
});
