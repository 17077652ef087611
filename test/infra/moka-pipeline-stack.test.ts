/**
 * The deployable stack's template: security settings, GPU Batch, retries, queue limits, IAM scope, the upload
 * rule, logs, and cdk-nag's AWS Solutions checks. The stack is synthesized once (with esbuild bundling of the
 * Lambdas and cdk-nag, ~10 s) and shared by every assertion.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import cdkNag from 'cdk-nag';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { extractStateMachineDefinition } from '../../lib/infra/asl.ts';
import {
  deployablePipelineDefinition,
  stackStateMachineDefinition,
} from '../../lib/infra/deployable-definition.ts';
import { MokaPipelineStack } from '../../lib/infra/moka-pipeline-stack.ts';
import { STACK_OUTPUTS } from '../../lib/pipeline/deployed-stack.ts';
import { parseStackOptions } from '../../lib/infra/stack-options.ts';
import { parseRunConfig } from '../../lib/pipeline/run-config.ts';
import { DETERMINISTIC_FAILURE_EXIT_CODE, STATE_NAMES } from '../../lib/pipeline/state-names.ts';

type Resource = { Type: string; Properties: Record<string, unknown> };

/** asl-validator 4 (CommonJS, no type declarations): `validator(definition, options)`. */
const aslValidator = createRequire(import.meta.url)('asl-validator') as (
  definition: unknown,
  options: { checkArn: boolean; checkPaths: boolean },
) => { isValid: boolean; errorsText: (separator?: string) => string };

let outdir: string;
let stack: MokaPipelineStack;
let template: Template;
let resources: Record<string, Resource>;
const byType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

beforeAll(() => {
  outdir = mkdtempSync(join(tmpdir(), 'moka-cdk-'));
  const app = new App({ outdir });
  stack = new MokaPipelineStack(app, 'MokaTest', {
    options: parseStackOptions({ runnableTimeoutMinutes: '45', logRetentionDays: 30 }),
    env: { account: '123456789012', region: 'us-east-1' },
  });
  template = Template.fromStack(stack);
  resources = template.toJSON().Resources as Record<string, Resource>;
});
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe('artifact bucket', () => {
  it('is encrypted, versioned, private, TLS-only and sends events to EventBridge', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      VersioningConfiguration: { Status: 'Enabled' },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: { EventBridgeConfiguration: {} },
    });
  });

  it('expires abandoned multipart uploads and old checkpoints (non-current versions once a stage deleted them)', () => {
    const [, bucket] = byType('AWS::S3::Bucket')[0]!;
    const rules = (bucket.Properties.LifecycleConfiguration as { Rules: Record<string, unknown>[] }).Rules;
    expect(rules).toEqual([
      {
        Id: 'abort-incomplete-multipart-uploads',
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 },
        Status: 'Enabled',
      },
      {
        Id: 'expire-old-checkpoints-and-versions',
        NoncurrentVersionExpiration: { NoncurrentDays: 7 },
        ExpiredObjectDeleteMarker: true,
        Status: 'Enabled',
      },
    ]);
  });
});

describe('GPU Batch', () => {
  it('has a spot and an on-demand environment on the ECS AL2023 NVIDIA AMI, ordered spot first in one queue', () => {
    const envs = byType('AWS::Batch::ComputeEnvironment');
    expect(envs).toHaveLength(2);
    const spot = envs.find(([, r]) => (r.Properties.ComputeResources as { Type: string }).Type === 'SPOT')!;
    const onDemand = envs.find(
      ([, r]) => (r.Properties.ComputeResources as { Type: string }).Type === 'EC2',
    )!;
    for (const [, env] of [spot, onDemand]) {
      expect(env.Properties.ComputeResources).toMatchObject({
        Ec2Configuration: [{ ImageType: 'ECS_AL2023_NVIDIA' }],
        InstanceTypes: ['g5.xlarge', 'g5.2xlarge', 'g6.xlarge', 'g6.2xlarge', 'g4dn.xlarge'], // no "optimal" CPU class
        MinvCpus: 0,
        MaxvCpus: 64,
      });
    }
    const [, queue] = byType('AWS::Batch::JobQueue')[0]!;
    expect(queue.Properties.ComputeEnvironmentOrder).toEqual([
      { ComputeEnvironment: { 'Fn::GetAtt': [spot[0], 'ComputeEnvironmentArn'] }, Order: 1 },
      { ComputeEnvironment: { 'Fn::GetAtt': [onDemand[0], 'ComputeEnvironmentArn'] }, Order: 2 },
    ]);
  });

  it('cancels jobs stuck RUNNABLE at the head of the queue after the configured time', () => {
    const [, queue] = byType('AWS::Batch::JobQueue')[0]!;
    const actions = queue.Properties.JobStateTimeLimitActions as Record<string, unknown>[];
    expect(actions.length).toBeGreaterThanOrEqual(1);
    for (const a of actions)
      expect(a).toMatchObject({ Action: 'CANCEL', State: 'RUNNABLE', MaxTimeSeconds: 45 * 60 });
    expect(actions.map((a) => a.Reason)).toContain('CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY');
  });

  it('runs the instances in private subnets with an S3 gateway endpoint, IMDSv2 and encrypted gp3 root volumes', () => {
    template.hasResourceProperties('AWS::EC2::VPCEndpoint', {
      VpcEndpointType: 'Gateway',
      ServiceName: { 'Fn::Join': ['', ['com.amazonaws.', { Ref: 'AWS::Region' }, '.s3']] },
    });
    const privateSubnets = new Set(
      byType('AWS::EC2::Subnet')
        .filter(([, s]) => s.Properties.MapPublicIpOnLaunch === false)
        .map(([id]) => id),
    );
    for (const [, env] of byType('AWS::Batch::ComputeEnvironment')) {
      const subnets = (env.Properties.ComputeResources as { Subnets: { Ref: string }[] }).Subnets;
      expect(subnets.length).toBeGreaterThan(0);
      for (const s of subnets) expect(privateSubnets.has(s.Ref)).toBe(true);
    }
    template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        MetadataOptions: { HttpTokens: 'required' },
        BlockDeviceMappings: [
          {
            DeviceName: '/dev/xvda',
            Ebs: Match.objectLike({ Encrypted: true, VolumeType: 'gp3', VolumeSize: 200 }),
          },
        ],
      }),
    });
  });
});

describe('job definitions', () => {
  const jobDef = (stage: string) => {
    const found = byType('AWS::Batch::JobDefinition').filter(([id]) => id.startsWith(`Stages${stage}Job`));
    expect(found).toHaveLength(1);
    return found[0]![1].Properties as {
      ContainerProperties: Record<string, unknown> & {
        ResourceRequirements: { Type: string; Value: string }[];
      };
      RetryStrategy: { Attempts: number; EvaluateOnExit: Record<string, string>[] };
      Timeout: { AttemptDurationSeconds: number };
    };
  };

  it('reserve a GPU, memory that fits a g5.xlarge, and a large /dev/shm for quantize, train and eval', () => {
    for (const stage of ['quantize', 'train', 'eval']) {
      const c = jobDef(stage).ContainerProperties;
      expect(c.ResourceRequirements).toEqual(
        expect.arrayContaining([
          { Type: 'GPU', Value: '1' },
          { Type: 'VCPU', Value: '4' },
          { Type: 'MEMORY', Value: String(14 * 1024) }, // 16 GiB less what the ECS agent keeps
        ]),
      );
      expect(c.LinuxParameters).toMatchObject({ SharedMemorySize: 7 * 1024, InitProcessEnabled: true });
    }
  });

  it('give the report stage a CPU job (no GPU reservation)', () => {
    const r = jobDef('report').ContainerProperties.ResourceRequirements;
    expect(r.find((x) => x.Type === 'GPU')).toBeUndefined();
    expect(r).toEqual(
      expect.arrayContaining([
        { Type: 'VCPU', Value: '2' },
        { Type: 'MEMORY', Value: '4096' },
      ]),
    );
  });

  it('run `moka stage <stage>` with the run URI (and variant) as job parameters', () => {
    expect(jobDef('train').ContainerProperties.Command).toEqual([
      'train',
      '--run',
      'Ref::runUri',
      '--variant',
      'Ref::variant',
    ]);
    expect(jobDef('quantize').ContainerProperties.Command).toEqual(['quantize', '--run', 'Ref::runUri']);
    expect(jobDef('report').ContainerProperties.Command).toEqual(['report', '--run', 'Ref::runUri']);
  });

  it('retry spot reclaims and image pulls, never a failing program; time out each attempt', () => {
    for (const stage of ['quantize', 'train', 'eval', 'report']) {
      const d = jobDef(stage);
      expect(d.RetryStrategy).toEqual({
        Attempts: 5,
        EvaluateOnExit: [
          { Action: 'EXIT', OnExitCode: String(DETERMINISTIC_FAILURE_EXIT_CODE) },
          { Action: 'RETRY', OnStatusReason: 'Host EC2*' },
          { Action: 'RETRY', OnReason: 'CannotPullContainerError:*' },
          { Action: 'EXIT', OnReason: '*' }, // without it Batch would retry every other failure
        ],
      });
    }
    expect(jobDef('train').Timeout.AttemptDurationSeconds).toBe(24 * 3600);
    expect(jobDef('report').Timeout.AttemptDurationSeconds).toBe(30 * 60);
  });
});

describe('state machine', () => {
  it("has the pipeline's states, its Batch tasks on this stack's queue and job definitions", () => {
    const asl = extractStateMachineDefinition(stack) as {
      StartAt: string;
      States: Record<string, Record<string, unknown>>;
    };
    expect(asl.StartAt).toBe(STATE_NAMES.validate);
    const names = JSON.stringify(asl);
    for (const n of [
      STATE_NAMES.validate,
      STATE_NAMES.quantize,
      STATE_NAMES.train,
      STATE_NAMES.evaluate,
      STATE_NAMES.report,
      STATE_NAMES.finalize,
    ]) {
      expect(names).toContain(`"${n}"`);
    }
    const quantize = asl.States[STATE_NAMES.quantize] as {
      Resource: string;
      Parameters: Record<string, unknown>;
    };
    expect(quantize.Resource).toBe('arn:aws:states:::batch:submitJob.sync');
    expect(quantize.Parameters).toMatchObject({ Parameters: { 'runUri.$': '$.runUri' } });
  });

  it('is the definition the in-memory (no-synth) path gives, which local runs execute', () => {
    const synthesized = extractStateMachineDefinition(stack);
    expect(stackStateMachineDefinition(stack)).toEqual(synthesized);
    // A fresh in-memory stack with the same options: the same ASL (placeholders are logical ids, not stack names).
    expect(deployablePipelineDefinition({ runnableTimeoutMinutes: '45', logRetentionDays: 30 })).toEqual(
      synthesized,
    );
    // And it is valid Amazon States Language, ARNs included (asl-validator).
    const result = aslValidator(synthesized, { checkArn: true, checkPaths: true });
    expect(result.errorsText()).toBe('');
    expect(result.isValid).toBe(true);
  });

  it('logs every execution event to a vended log group and traces with X-Ray', () => {
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      LoggingConfiguration: Match.objectLike({ Level: 'ALL', IncludeExecutionData: true }),
      TracingConfiguration: { Enabled: true },
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', {
      LogGroupName: '/aws/vendedlogs/states/MokaTest-pipeline',
    });
  });
});

describe('IAM', () => {
  type Statement = { Effect: string; Action: string | string[]; Resource: unknown };
  const statementsOf = (pred: (policyId: string) => boolean): Statement[] =>
    byType('AWS::IAM::Policy')
      .filter(([id]) => pred(id))
      .flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
  const actions = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
  const resourcesOf = (s: Statement) => JSON.stringify(s.Resource);

  it('grants no "*" or "service:*" action anywhere', () => {
    const all = statementsOf(() => true);
    expect(all.length).toBeGreaterThan(5);
    for (const s of all) for (const a of actions(s)) expect(a).not.toMatch(/^(\*|[a-z0-9-]+:\*)$/);
  });

  it('lets the state machine submit to its own queue and job definitions, and terminate the jobs it started', () => {
    const sm = statementsOf((id) => id.startsWith('PipelineStateMachineRole'));
    const submit = sm.filter((s) => actions(s).includes('batch:SubmitJob'));
    expect(submit.length).toBeGreaterThan(0);
    for (const s of submit) expect(s.Resource).not.toBe('*');
    // The queue, and the four stage job definitions by name (any revision), nothing else.
    const text = JSON.stringify(submit);
    expect(text).toContain('ComputeJobQueue');
    expect(text).not.toContain('job-definition/*');
    for (const stage of ['quantize', 'train', 'eval', 'report'])
      expect(text).toContain(`:job-definition/MokaTest-${stage}:*`);
    template.hasResourceProperties('AWS::Batch::JobDefinition', { JobDefinitionName: 'MokaTest-train' });
    expect(sm.some((s) => actions(s).includes('batch:TerminateJob'))).toBe(true);
  });

  it('scopes S3 writes: stages write runs/ and cache/ only; the upload trigger writes nothing', () => {
    const writes = (s: Statement) => actions(s).some((a) => /^s3:(PutObject|DeleteObject|Abort)/.test(a));
    const job = statementsOf((id) => id.startsWith('JobRole')).filter(writes);
    expect(job.length).toBeGreaterThan(0);
    for (const s of job) expect(resourcesOf(s)).toMatch(/\/(runs|cache)\/\*"/);
    expect(statementsOf((id) => id.startsWith('UploadTrigger')).filter(writes)).toEqual([]);
    const trigger = statementsOf((id) => id.startsWith('UploadTrigger'));
    expect(trigger.some((s) => actions(s).includes('states:StartExecution'))).toBe(true);
  });
});

describe('upload trigger', () => {
  it('matches only run configs and data set commit objects of this bucket, never runs/', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created'],
        detail: {
          bucket: { name: [{ Ref: Match.stringLikeRegexp('^ArtifactsBucket') }] },
          object: { key: [{ wildcard: 'runs-incoming/*.json' }, { wildcard: 'datasets/*/_READY' }] },
        },
      },
      Targets: [Match.objectLike({ DeadLetterConfig: Match.anyValue(), RetryPolicy: Match.anyValue() })],
    });
    expect(JSON.stringify(template.findResources('AWS::Events::Rule'))).not.toContain('"runs/');
  });

  it('runs the Lambdas on Node.js 22.x or newer with JSON logs', () => {
    const fns = byType('AWS::Lambda::Function').filter(
      ([id]) => !id.startsWith('BucketNotificationsHandler'),
    );
    expect(fns).toHaveLength(3);
    for (const [, f] of fns) {
      expect(Number(/^nodejs(\d+)\.x$/.exec(f.Properties.Runtime as string)?.[1])).toBeGreaterThanOrEqual(22);
      expect(f.Properties.LoggingConfig).toMatchObject({ LogFormat: 'JSON' });
    }
  });
});

describe('operations', () => {
  it('keeps every log group for the configured retention', () => {
    const groups = byType('AWS::Logs::LogGroup');
    expect(groups.length).toBeGreaterThanOrEqual(7); // jobs, executions, 3 functions, flow log, bucket notifications
    template.hasResourceProperties('AWS::Logs::LogGroup', {
      LogGroupName: {
        'Fn::Join': ['', ['/aws/lambda/', { Ref: Match.stringLikeRegexp('^BucketNotificationsHandler') }]],
      },
    });
    for (const [, g] of groups) expect(g.Properties.RetentionInDays).toBe(30);
    // ...and deletes them with the stack (the state machine's has a fixed name: a retained one would block a redeploy).
    for (const [id] of groups)
      expect((resources[id] as unknown as { DeletionPolicy?: string }).DeletionPolicy).toBe('Delete');
  });

  it('alarms on failed executions to an SNS topic', () => {
    const topics = Object.keys(template.findResources('AWS::SNS::Topic'));
    expect(topics).toHaveLength(1);
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Metrics: Match.arrayWith([Match.objectLike({ Expression: 'failed + timedOut + aborted' })]),
      AlarmActions: [{ Ref: topics[0] }],
    });
  });

  it('outputs the bucket, state machine, console link and a valid example input', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    for (const key of Object.values(STACK_OUTPUTS)) expect(outputs[key]).toBeDefined();
    const example = outputs[STACK_OUTPUTS.exampleInput]!.Value as { 'Fn::Join': [string, unknown[]] };
    const text = example['Fn::Join'][1].map((p) => (typeof p === 'string' ? p : 'my-bucket')).join('');
    expect(() => parseRunConfig(JSON.parse(text), 'ExampleInput')).not.toThrow();
  });

  it("passes cdk-nag's AWS Solutions checks: no finding left unacknowledged", () => {
    const report = new cdkNag.AwsSolutionsChecks(stack).validateScope(stack);
    const findings = report.violations.flatMap((v) =>
      v.violatingResources.map((r) => `${v.ruleName} ${r.constructPath ?? r.resourceLogicalId}`),
    );
    expect(findings).toEqual([]);
  });
});

describe('task image', () => {
  it('stages a build context with the Dockerfile and what it copies, and nothing else (no node_modules)', () => {
    const manifest = JSON.parse(readFileSync(join(outdir, 'MokaTest.assets.json'), 'utf8')) as {
      dockerImages: Record<string, { source: { directory: string; dockerFile: string; platform?: string } }>;
    };
    const images = Object.values(manifest.dockerImages);
    expect(images).toHaveLength(1);
    const { directory, dockerFile, platform } = images[0]!.source;
    expect({ dockerFile, platform }).toEqual({
      dockerFile: 'containers/Dockerfile',
      platform: 'linux/amd64',
    });
    const staged = join(outdir, directory);
    expect(readdirSync(staged).sort()).toEqual(
      [
        '.dockerignore',
        '.npmrc',
        'bin',
        'containers',
        'lib',
        'native',
        'package-lock.json',
        'package.json',
        'scripts',
        'tsconfig.json',
      ].sort(),
    );
    expect(readdirSync(join(staged, 'containers'))).toEqual(['Dockerfile']);
    expect(readdirSync(join(staged, 'scripts'))).toEqual(['build-native.mjs']);
    // The kernels' sources, never a locally built addon (the image compiles its own).
    expect(readdirSync(join(staged, 'native'))).toContain('matmul-4bit.cc');
    expect(readdirSync(join(staged, 'native'))).not.toContain('build');
    const dockerfile = readFileSync(join(staged, 'containers', 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^RUN ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci/m); // the README's GPU opt-in
    expect(dockerfile).toMatch(/^ENTRYPOINT \["moka", "stage"\]$/m);
  });
});

describe('bundled Lambdas (the esbuild output that deploys)', () => {
  /** The staged bundle of a function, as synth wrote it (cdk.out/asset.<hash>/index.mjs). */
  const bundleOf = (idPrefix: string) => {
    const [, fn] = byType('AWS::Lambda::Function').find(([id]) => id.startsWith(idPrefix))!;
    const key = (fn.Properties.Code as { S3Key: string }).S3Key.replace(/\.zip$/, '');
    const file = join(outdir, `asset.${key}`, 'index.mjs');
    expect(existsSync(file)).toBe(true);
    return pathToFileURL(file).href;
  };

  it('validate-run loads, rejects a bad config listing every problem, and writes a good one to the run folder', async () => {
    const work = mkdtempSync(join(tmpdir(), 'moka-bundle-'));
    const saved = process.env.MOKA_ARTIFACT_URI;
    try {
      process.env.MOKA_ARTIFACT_URI = pathToFileURL(join(work, 'store')).href;
      mkdirSync(join(work, 'store'));
      mkdirSync(join(work, 'model'));
      writeFileSync(join(work, 'model', 'config.json'), '{}');
      writeFileSync(join(work, 'train.jsonl'), '{"instruction":"a","output":"b"}\n');
      // The bundle logs its JSON lines to stdout: keep them out of the test output.
      vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
      const { handler } = (await import(bundleOf('ValidateRunFunction'))) as {
        handler: (e: unknown) => Promise<{ runId: string }>;
      };
      await expect(handler({ model: 's3://models-bucket/m', adapters: { type: 'nope' } })).rejects.toThrow(
        /invalid \(2 problems\)/,
      );
      const plan = await handler({
        runId: 'bundle-check',
        model: join(work, 'model'),
        quantize: false,
        adapters: { type: 'lora', r: 2 },
        data: { train: join(work, 'train.jsonl') },
      });
      expect(plan).toMatchObject({ runId: 'bundle-check', variants: ['lora'], quantizeNeeded: false });
      const written = JSON.parse(
        readFileSync(join(work, 'store', 'runs', 'bundle-check', 'config.json'), 'utf8'),
      );
      expect(written.runId).toBe('bundle-check');
    } finally {
      vi.restoreAllMocks();
      if (saved === undefined) delete process.env.MOKA_ARTIFACT_URI;
      else process.env.MOKA_ARTIFACT_URI = saved;
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('start-on-upload loads and ignores an event outside the watched prefixes without calling AWS', async () => {
    const env = {
      STATE_MACHINE_ARN: 'arn:aws:states:us-east-1:123456789012:stateMachine:x',
      BUCKET_NAME: 'b',
      RUNS_INCOMING_PREFIX: 'runs-incoming/',
      DATASETS_PREFIX: 'datasets/',
      TRIGGERS_PREFIX: 'triggers/',
      AWS_REGION: 'us-east-1',
    };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    const write = process.stdout.write.bind(process.stdout);
    const lines: string[] = [];
    process.stdout.write = ((chunk: string) => (
      lines.push(String(chunk)),
      true
    )) as typeof process.stdout.write;
    try {
      const { handler } = (await import(bundleOf('UploadTriggerStartOnUploadFunction'))) as {
        handler: (e: unknown) => Promise<unknown>;
      };
      const r = await handler({
        source: 'aws.s3',
        'detail-type': 'Object Created',
        detail: { bucket: { name: 'b' }, object: { key: 'runs/x/status.json' } },
      });
      expect(r).toMatchObject({ outcome: 'ignored' });
    } finally {
      process.stdout.write = write;
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
    expect(JSON.parse(lines.find((l) => l.includes('event ignored'))!)).toMatchObject({
      level: 'info',
      msg: 'event ignored',
      key: 'runs/x/status.json',
    });
  });
});

describe('other configurations', () => {
  /** A stack built in memory (no bundling, no staging: nag and the construct tree need neither). */
  const build = (context: Record<string, unknown>) => {
    const app = new App({
      context: { 'aws:cdk:bundling-stacks': [], 'aws:cdk:disable-asset-staging': true },
    });
    return new MokaPipelineStack(app, 'MokaVariant', {
      options: parseStackOptions(context),
      env: { account: '123456789012', region: 'eu-west-1' },
    });
  };
  const findings = (s: MokaPipelineStack) =>
    new cdkNag.AwsSolutionsChecks(s)
      .validateScope(s)
      .violations.flatMap((v) => v.violatingResources.map((r) => `${v.ruleName} ${r.constructPath}`));

  it('a KMS-encrypted bucket, an existing bucket, on-demand only: each passes cdk-nag', () => {
    const kms = build({ kms: 'true' });
    expect(findings(kms)).toEqual([]);
    const bucket = kms.node.findAll().find((c) => c.node.path.endsWith('Artifacts/Bucket/Resource'))!;
    expect(kms.resolve((bucket as unknown as { bucketEncryption: unknown }).bucketEncryption)).toMatchObject({
      serverSideEncryptionConfiguration: [{ serverSideEncryptionByDefault: { sseAlgorithm: 'aws:kms' } }],
    });

    const existing = build({
      bucketName: 'my-existing-bucket',
      spot: 'false',
      alarmEmail: 'ops@example.com',
    });
    expect(findings(existing)).toEqual([]);
    expect(existing.bucket.bucketName).toBe('my-existing-bucket');
    expect(existing.node.findAll().some((c) => c.node.path.endsWith('Artifacts/Bucket'))).toBe(false);
    expect(existing.batch.spotEnvironment).toBeUndefined();
  });
});
