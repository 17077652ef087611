/**
 * The deployable stack: everything a user's AWS account needs to run the pipeline, composed in reading order —
 * artifact bucket → GPU Batch (VPC, spot + on-demand compute environments, queue) → task image and stage job
 * definitions → Lambdas → the pipeline state machine → S3-triggered runs → alarms → outputs.
 *
 * Options come from CDK context (lib/infra/stack-options.ts, docs/deploy.md) and are checked before anything is
 * built. `cdk synth` needs neither AWS credentials nor Docker: the account and region stay unresolved unless
 * given, esbuild bundles the Lambdas locally, and the task image is only staged (built by `cdk deploy`).
 */
import {
  CfnOutput,
  CfnResource,
  Duration,
  RemovalPolicy,
  Stack,
  Token,
  type CfnElement,
  type IResolvable,
  type IResolveContext,
  type StackProps,
} from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct, IConstruct } from 'constructs';
import { COMPLETE_MARKER } from '../pipeline/store/artifact-store.ts';
import { RETRAIN_PREFIX } from '../pipeline/upload-trigger.ts';
import { DETERMINISTIC_FAILURE_EXIT_CODE } from '../pipeline/state-names.ts';
import { STACK_OUTPUTS } from '../pipeline/stack-outputs.ts';
import { exampleRunInput } from '../pipeline/example-input.ts';
import { ArtifactBucket } from './artifact-bucket.ts';
import { GpuBatch } from './gpu-batch.ts';
import { acknowledge } from './nag.ts';
import { PipelineAlarms } from './pipeline-alarms.ts';
import { PipelineFunction } from './pipeline-function.ts';
import { PipelineStateMachine } from './pipeline-state-machine.ts';
import { RetrainTrigger } from './retrain-trigger.ts';
import { BATCH_STAGES, RUNS_PREFIX, type PipelineStackOptions } from './stack-options.ts';
import { StageJobDefinitions } from './stage-job-definitions.ts';
import { TaskImage } from './task-image.ts';

/** The Batch commands after the image's entrypoint (`moka stage`); `Ref::` values are the jobs' Parameters. */
export const STAGE_COMMANDS = {
  quantize: ['quantize', '--run', 'Ref::runUri'],
  train: ['train', '--run', 'Ref::runUri', '--variant', 'Ref::variant'],
  eval: ['eval', '--run', 'Ref::runUri', '--variant', 'Ref::variant'],
  report: ['report', '--run', 'Ref::runUri'],
} as const;

export interface MokaPipelineStackProps extends StackProps {
  readonly options: PipelineStackOptions;
}

export class MokaPipelineStack extends Stack {
  public readonly bucket: s3.IBucket;
  public readonly batch: GpuBatch;
  public readonly jobs: StageJobDefinitions;
  public readonly pipeline: PipelineStateMachine;
  public readonly trigger: RetrainTrigger;
  public readonly alarms: PipelineAlarms;
  public readonly jobLogGroup: logs.LogGroup;
  public readonly options: PipelineStackOptions;

  constructor(scope: Construct, id: string, props: MokaPipelineStackProps) {
    super(scope, id, props);
    const o = props.options;
    this.options = o;
    const retention = o.logRetentionDays as logs.RetentionDays;

    // 1. Artifact bucket (new, or the user's).
    const artifacts = new ArtifactBucket(this, 'Artifacts', {
      existingBucket: o.bucketName
        ? s3.Bucket.fromBucketName(this, 'ExistingBucket', o.bucketName)
        : undefined,
      kms: o.kms,
      oldVersionExpirationDays: o.oldVersionExpirationDays,
    });
    this.bucket = artifacts.bucket;
    this.keepBucketNotificationLogs(retention);
    const storeRoot = `s3://${this.bucket.bucketName}`;

    // 2. GPU compute: VPC, spot + on-demand environments, one queue with a RUNNABLE time limit.
    this.batch = new GpuBatch(this, 'Compute', {
      instanceTypes: o.instanceTypes,
      spot: o.spot,
      maxVcpus: o.maxVcpus,
      runnableTimeout: Duration.minutes(o.runnableTimeoutMinutes),
      flowLogRetention: retention,
    });

    // 3. Task image and one job definition per stage. Stages read anything in the bucket (models, data) and
    //    write only a run's folder and the shared quantized-model cache.
    // Log groups go with the stack (`cdk destroy`); the artifact bucket stays.
    this.jobLogGroup = new logs.LogGroup(this, 'JobLogs', {
      retention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const jobRole = new iam.Role(this, 'JobRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'The moka pipeline stages (Batch jobs): read inputs, write runs/ and cache/',
    });
    this.bucket.grantRead(jobRole);
    this.bucket.grantWrite(jobRole, `${RUNS_PREFIX}*`);
    this.bucket.grantWrite(jobRole, 'cache/*');
    this.jobs = new StageJobDefinitions(this, 'Stages', {
      image: new TaskImage(this, 'TaskImage').image,
      jobs: o.jobs,
      retryAttempts: o.retryAttempts,
      deterministicFailureExitCode: DETERMINISTIC_FAILURE_EXIT_CODE,
      jobRole,
      logGroup: this.jobLogGroup,
      commands: {
        quantize: [...STAGE_COMMANDS.quantize],
        train: [...STAGE_COMMANDS.train],
        eval: [...STAGE_COMMANDS.eval],
        report: [...STAGE_COMMANDS.report],
      },
      namePrefix: this.stackName,
      // The state machine passes both; the defaults only make the definitions valid on their own.
      parameters: { runUri: `${storeRoot}/${RUNS_PREFIX}unset`, variant: 'base' },
    });

    // 4. Lambdas of the state machine: validate the input (write config.json), record the outcome.
    const functionEnv = { MOKA_ARTIFACT_URI: storeRoot };
    const validateRun = new PipelineFunction(this, 'ValidateRun', {
      entry: 'functions/validate-run.ts',
      description: 'moka: validates a run config and writes it to the run folder',
      environment: functionEnv,
      logRetention: retention,
    });
    const finalize = new PipelineFunction(this, 'Finalize', {
      entry: 'functions/finalize.ts',
      description: "moka: records a run's final status and summary",
      environment: functionEnv,
      logRetention: retention,
    });
    this.bucket.grantRead(validateRun.function);
    this.bucket.grantWrite(validateRun.function, `${RUNS_PREFIX}*`);
    this.bucket.grantReadWrite(finalize.function, `${RUNS_PREFIX}*`);

    // 5. The pipeline state machine, on the real compute.
    const stateMachineLogs = new logs.LogGroup(this, 'StateMachineLogs', {
      removalPolicy: RemovalPolicy.DESTROY, // it has a fixed name: a retained one would block a redeploy
      logGroupName: `/aws/vendedlogs/states/${this.stackName}-pipeline`,
      retention,
    });
    this.pipeline = new PipelineStateMachine(this, 'Pipeline', {
      jobQueue: this.batch.jobQueue,
      jobDefinitions: this.jobs.jobDefinitions,
      validateRunFunction: validateRun.function,
      finalizeFunction: finalize.function,
      variantConcurrency: o.variantConcurrency,
      timeout: Duration.minutes(o.executionTimeoutMinutes),
      logGroup: stateMachineLogs,
    });
    const stateMachine = this.pipeline.stateMachine;
    this.scopeSubmitJobToStageDefinitions(stateMachine);

    // 6. Runs started by uploads.
    this.trigger = new RetrainTrigger(this, 'UploadTrigger', {
      bucket: this.bucket,
      stateMachine,
      runsIncomingPrefix: o.runsIncomingPrefix,
      datasetsPrefix: o.datasetsPrefix,
      triggersPrefix: o.triggersPrefix,
      logRetention: retention,
    });

    // 7. Alarms.
    this.alarms = new PipelineAlarms(this, 'Alarms', {
      stateMachine,
      deadLetterQueue: this.trigger.deadLetterQueue,
      email: o.alarmEmail,
    });

    // 8. Outputs: what the console user and `moka start/status/logs/fetch` need.
    const out = (key: string, value: string, description: string) =>
      new CfnOutput(this, key, { value, description });
    out(STACK_OUTPUTS.bucket, this.bucket.bucketName, 'Artifact bucket (runs/<runId>/ holds each run)');
    out(
      STACK_OUTPUTS.stateMachineArn,
      stateMachine.stateMachineArn,
      'Start executions of this state machine',
    );
    out(
      STACK_OUTPUTS.consoleLink,
      `https://${this.region}.console.aws.amazon.com/states/home?region=${this.region}#/statemachines/view/${stateMachine.stateMachineArn}`,
      'The state machine in the Step Functions console ("Start execution")',
    );
    out(
      STACK_OUTPUTS.exampleInput,
      JSON.stringify(exampleRunInput(this.bucket.bucketName)),
      'An example execution input (a run config)',
    );
    out(STACK_OUTPUTS.jobLogGroup, this.jobLogGroup.logGroupName, 'CloudWatch log group of the Batch jobs');
    out(
      STACK_OUTPUTS.stateMachineLogGroup,
      stateMachineLogs.logGroupName,
      'CloudWatch log group of the executions',
    );
    out(STACK_OUTPUTS.jobQueueArn, this.batch.jobQueue.jobQueueArn, 'Batch job queue of the stages');
    out(
      STACK_OUTPUTS.alarmTopicArn,
      this.alarms.topic.topicArn,
      'SNS topic of failed executions (subscribe to it)',
    );

    this.acknowledgeReviewedFindings(artifacts, [validateRun, finalize]);
  }

  /**
   * CDK's bucket-notifications handler (the singleton that turns on EventBridge for a new bucket) would get a log
   * group created by Lambda itself, kept forever: create it here first, with the stack's retention.
   */
  private keepBucketNotificationLogs(retention: logs.RetentionDays): void {
    const handler = this.node.children.find((c) => c.node.id.startsWith('BucketNotificationsHandler'));
    const fn = handler?.node.children.find(
      (c) => CfnResource.isCfnResource(c) && c.cfnResourceType === 'AWS::Lambda::Function',
    ) as CfnResource | undefined;
    if (!fn) return; // an existing bucket: no handler
    const group = new logs.LogGroup(this, 'BucketNotificationsLogs', {
      logGroupName: `/aws/lambda/${fn.ref}`,
      retention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // The handler runs during the deployment (the custom resource): its log group must exist by then.
    for (const c of this.node.findAll()) {
      if (CfnResource.isCfnResource(c) && c.cfnResourceType === 'Custom::S3BucketNotifications')
        c.node.addDependency(group);
    }
  }

  /** The stage job definitions' names (StageJobDefinitions' `namePrefix` is the stack name). */
  private jobDefinitionNames(): string[] {
    return BATCH_STAGES.map((stage) => `${this.stackName}-${stage}`);
  }

  /**
   * CDK's BatchSubmitJob grants batch:SubmitJob on every job definition of the account (`job-definition/*`);
   * this narrows it to the stage definitions' names (any revision), by rewriting that one resource of the state
   * machine role's policy when it is synthesized.
   */
  private scopeSubmitJobToStageDefinitions(stateMachine: sfn.StateMachine): void {
    const policy = stateMachine.role.node.tryFindChild('DefaultPolicy')?.node.defaultChild as
      | iam.CfnPolicy
      | undefined;
    if (!policy) throw new Error('MokaPipelineStack: the state machine role has no default policy to scope');
    const scoped = this.jobDefinitionNames().map((name) =>
      this.formatArn({ service: 'batch', resource: 'job-definition', resourceName: `${name}:*` }),
    );
    const original = policy.policyDocument as unknown;
    const narrowed: IResolvable = {
      creationStack: [],
      resolve: (ctx: IResolveContext) => {
        const doc = ctx.resolve(original) as { Statement: { Action: unknown; Resource: unknown }[] };
        for (const st of doc.Statement) {
          if (st.Action !== 'batch:SubmitJob' || !Array.isArray(st.Resource)) continue;
          st.Resource = st.Resource.flatMap((r: unknown) =>
            JSON.stringify(r).includes(':job-definition/*')
              ? scoped.map((a) => ctx.resolve(a) as unknown)
              : [r],
          );
        }
        return doc;
      },
      toString: () => 'MokaPipelineStack.scopedStateMachinePolicy',
    };
    policy.policyDocument = narrowed;
  }

  /**
   * The cdk-nag findings reviewed and accepted, each acknowledged by its exact id (which names the resource ARN
   * and action it is about) and with its reason; anything else nag finds fails the synth.
   */
  private acknowledgeReviewedFindings(artifacts: ArtifactBucket, functions: PipelineFunction[]): void {
    const region = Token.isUnresolved(this.region) ? '<AWS::Region>' : this.region;
    const account = Token.isUnresolved(this.account) ? '<AWS::AccountId>' : this.account;
    const logicalId = (c: IConstruct) => this.getLogicalId(c.node.defaultChild as CfnElement);
    const bucketArn = artifacts.created
      ? `<${logicalId(artifacts.bucket)}.Arn>`
      : `arn:<AWS::Partition>:s3:::${this.options.bucketName}`;
    const o = this.options;

    acknowledge(
      this,
      "The S3 grant sets (CDK's grantRead/grantWrite) end in wildcards that cover an action's variants " +
        '(s3:GetObject* = object, version, tagging, ACL reads); no statement grants a bare "*" action.',
      ...['s3:GetObject*', 's3:GetBucket*', 's3:List*', 's3:DeleteObject*', 's3:Abort*'].map(
        (a) => `AwsSolutions-IAM5[Action::${a}]`,
      ),
      ...(o.kms
        ? ['kms:ReEncrypt*', 'kms:GenerateDataKey*'].map((a) => `AwsSolutions-IAM5[Action::${a}]`)
        : []),
    );
    acknowledge(
      this,
      'Object permissions are scoped to key prefixes of the artifact bucket: stages write runs/* and the shared ' +
        'cache/*, validate-run and finalize write runs/*, the trigger reads its watched prefixes and the adapter ' +
        'markers of earlier retraining runs; stages and validate-run read the whole bucket (models and data may ' +
        'be anywhere in it).',
      ...[
        '*',
        `${RUNS_PREFIX}*`,
        'cache/*',
        `${o.runsIncomingPrefix}*`,
        `${o.triggersPrefix}*`,
        `${RUNS_PREFIX}${RETRAIN_PREFIX}*/variants/*/adapter/${COMPLETE_MARKER}`,
      ].map((k) => `AwsSolutions-IAM5[Resource::${bucketArn}/${k}]`),
    );
    acknowledge(
      this.jobs.executionRole,
      'ecr:GetAuthorizationToken has no resource-level permissions; the image pull itself is scoped to the asset repository.',
      'AwsSolutions-IAM5[Resource::*]',
    );
    acknowledge(
      this.pipeline,
      'Step Functions .sync Batch integration and tracing: batch:SubmitJob on the stage job definitions (any ' +
        'revision), batch:TerminateJob on the jobs it starts (ids unknown in advance), batch:DescribeJobs and the ' +
        "X-Ray actions (no resource-level permissions), and lambda:InvokeFunction on the two functions' versions.",
      'AwsSolutions-IAM5[Resource::*]',
      ...this.jobDefinitionNames().map(
        (name) =>
          `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:${region}:${account}:job-definition/${name}:*]`,
      ),
      `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:${region}:${account}:job/*]`,
      ...functions.map((f) => `AwsSolutions-IAM5[Resource::<${logicalId(f.function)}.Arn>:*]`),
    );
    // CDK's singleton that turns on the bucket's EventBridge notifications (a new bucket only).
    const notifications = this.node.children.find((c) => c.node.id.startsWith('BucketNotificationsHandler'));
    if (notifications) {
      acknowledge(
        notifications,
        "CDK's bucket-notifications custom resource uses AWSLambdaBasicExecutionRole only to write its own logs.",
        'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
      );
    }
  }
}
