/**
 * S3-triggered runs: an EventBridge rule on the artifact bucket's "Object Created" events, filtered to the
 * commit objects under the watched prefixes (`<runsIncomingPrefix>*.json` and `<datasetsPrefix>*_READY`: never
 * `runs/`, where the pipeline writes), invoking the `start-on-upload` Lambda (functions/start-on-upload.ts), which
 * starts one execution per upload. Failed invocations are retried, then kept in an SQS dead-letter queue.
 */
import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import { SqsDestination } from 'aws-cdk-lib/aws-lambda-destinations';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { acknowledge } from './nag.ts';
import { Construct } from 'constructs';
import { COMPLETE_MARKER } from '../pipeline/store/artifact-store.ts';
import { READY_OBJECT, RETRAIN_PREFIX } from '../pipeline/upload-trigger.ts';
import { RUNS_PREFIX } from './stack-options.ts';
import { PipelineFunction } from './pipeline-function.ts';

export interface RetrainTriggerProps {
  readonly bucket: s3.IBucket;
  readonly stateMachine: sfn.IStateMachine;
  /** Where an uploaded `<name>.json` run config starts that run. */
  readonly runsIncomingPrefix: string;
  /** Where `<name>/…/_READY` starts a retraining run of data set `<name>`. */
  readonly datasetsPrefix: string;
  /** Where the retraining templates `<name>.json` are read. */
  readonly triggersPrefix: string;
  readonly logRetention: logs.RetentionDays;
}

export class RetrainTrigger extends Construct {
  public readonly rule: events.Rule;
  public readonly function: PipelineFunction;
  /** Events whose invocation failed after the retries. */
  public readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: RetrainTriggerProps) {
    super(scope, id);
    this.function = new PipelineFunction(this, 'StartOnUpload', {
      entry: 'functions/start-on-upload.ts',
      description: 'Starts a moka run when a run config or a data set _READY object is uploaded',
      logRetention: props.logRetention,
      environment: {
        STATE_MACHINE_ARN: props.stateMachine.stateMachineArn,
        BUCKET_NAME: props.bucket.bucketName,
        RUNS_INCOMING_PREFIX: props.runsIncomingPrefix,
        DATASETS_PREFIX: props.datasetsPrefix,
        TRIGGERS_PREFIX: props.triggersPrefix,
      },
      timeout: Duration.minutes(2), // ListExecutions pages when looking for the previous adapter
    });
    const fn = this.function.function;

    // Least privilege: read the uploads and templates (not the run artifacts), start and list executions.
    props.bucket.grantRead(fn, `${props.runsIncomingPrefix}*`);
    props.bucket.grantRead(fn, `${props.triggersPrefix}*`);
    // The completion markers of earlier retraining runs' adapters (to start from the previous adapter).
    props.bucket.grantRead(fn, `${RUNS_PREFIX}${RETRAIN_PREFIX}*/variants/*/adapter/${COMPLETE_MARKER}`);
    props.stateMachine.grantStartExecution(fn);
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['states:ListExecutions'],
        resources: [props.stateMachine.stateMachineArn],
      }),
    );
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetters', {
      retentionPeriod: Duration.days(14),
      enforceSSL: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
    });
    acknowledge(
      this.deadLetterQueue,
      'This queue is itself the dead-letter queue of the upload trigger.',
      'AwsSolutions-SQS3',
    );
    // Invocations that fail (S3 or Step Functions errors) are retried twice by Lambda, then kept here.
    fn.configureAsyncInvoke({
      retryAttempts: 2,
      maxEventAge: Duration.hours(2),
      onFailure: new SqsDestination(this.deadLetterQueue),
    });

    this.rule = new events.Rule(this, 'ObjectCreated', {
      description: 'Run configs and data set commit objects uploaded to the moka artifact bucket',
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [props.bucket.bucketName] },
          object: {
            key: [
              { wildcard: `${props.runsIncomingPrefix}*.json` },
              { wildcard: `${props.datasetsPrefix}*/${READY_OBJECT}` },
            ],
          },
        },
      },
      targets: [
        // The queue here catches events EventBridge could not hand to Lambda at all.
        new targets.LambdaFunction(fn, {
          deadLetterQueue: this.deadLetterQueue,
          retryAttempts: 2,
          maxEventAge: Duration.hours(2),
        }),
      ],
    });
  }
}
