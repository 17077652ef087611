/**
 * One Batch job definition per pipeline stage, all running the task image (`containers/Dockerfile`, entrypoint
 * `moka stage`): GPU stages reserve their GPUs, memory and a large `/dev/shm`; the report stage is a CPU job.
 *
 * Retries (aws-pipeline-notes.md §5): Batch retries a job only for infrastructure failures, in this order —
 * EXIT on the pipeline's deterministic-failure exit code (bad data, bad config: retrying cannot help), RETRY when
 * the spot instance was reclaimed (`Host EC2*`), RETRY when the image could not be pulled, EXIT on anything else
 * (a failing program). Without the final catch-all Batch would retry every failure it did not match.
 */
import { Duration, Size } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import { LogDrivers } from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { BATCH_STAGES, type BatchStage, type StageJobOptions } from './stack-options.ts';

export interface StageJobDefinitionsProps {
  /** The task image. */
  readonly image: ecs.ContainerImage;
  /** Each stage's reservation and attempt timeout. */
  readonly jobs: Readonly<Record<BatchStage, StageJobOptions>>;
  /** Batch attempts per job (1–10). */
  readonly retryAttempts: number;
  /** The exit code with which a stage says "this fails the same way every time" (never retried). */
  readonly deterministicFailureExitCode: number;
  /** The role the stages run as (S3 access to the run folders). */
  readonly jobRole: iam.IRole;
  /** Where the containers' output goes; each stage writes streams under its own prefix. */
  readonly logGroup: logs.ILogGroup;
  /** The container command of each stage, after the entrypoint (`moka stage`); may use `Ref::<parameter>`. */
  readonly commands: Readonly<Record<BatchStage, string[]>>;
  /** Default values of the `Ref::` parameters the commands use. @default none */
  readonly parameters?: Readonly<Record<string, string>>;
  /** Environment of every stage's container. @default none */
  readonly environment?: Readonly<Record<string, string>>;
}

/** The retry strategy every stage uses, in evaluation order (the first match wins). */
export function stageRetryStrategies(deterministicFailureExitCode: number): batch.RetryStrategy[] {
  return [
    batch.RetryStrategy.of(
      batch.Action.EXIT,
      batch.Reason.custom({ onExitCode: String(deterministicFailureExitCode) }),
    ),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.CANNOT_PULL_CONTAINER),
    batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom({ onReason: '*' })),
  ];
}

export class StageJobDefinitions extends Construct {
  /** The job definition of each stage. */
  public readonly jobDefinitions: Readonly<Record<BatchStage, batch.EcsJobDefinition>>;
  /** The role Batch uses to pull the image and ship logs (shared by the stages). */
  public readonly executionRole: iam.Role;

  constructor(scope: Construct, id: string, props: StageJobDefinitionsProps) {
    super(scope, id);
    this.executionRole = new iam.Role(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Pulls the moka task image and writes its logs',
    });
    const defs = {} as Record<BatchStage, batch.EcsJobDefinition>;
    for (const stage of BATCH_STAGES) {
      const job = props.jobs[stage];
      const container = new batch.EcsEc2ContainerDefinition(this, `${stage}Container`, {
        image: props.image,
        cpu: job.vcpus,
        memory: Size.gibibytes(job.memoryGiB),
        gpu: job.gpus > 0 ? job.gpus : undefined,
        command: props.commands[stage],
        environment: { MOKA_STAGE: stage, ...props.environment },
        jobRole: props.jobRole,
        executionRole: this.executionRole,
        linuxParameters: new batch.LinuxParameters(this, `${stage}Linux`, {
          sharedMemorySize: Size.gibibytes(job.sharedMemoryGiB),
          initProcessEnabled: true, // forwards SIGTERM to node, so a stage can flush its checkpoint
        }),
        logging: LogDrivers.awsLogs({ logGroup: props.logGroup, streamPrefix: stage }),
        readonlyRootFilesystem: false, // stages write their working files under /tmp and the model cache
      });
      defs[stage] = new batch.EcsJobDefinition(this, `${stage}Job`, {
        container,
        parameters: props.parameters ? { ...props.parameters } : undefined,
        retryAttempts: props.retryAttempts,
        retryStrategies: stageRetryStrategies(props.deterministicFailureExitCode),
        timeout: Duration.minutes(job.timeoutMinutes),
        propagateTags: true,
      });
    }
    this.jobDefinitions = defs;
  }
}
