/**
 * The pipeline as a Step Functions state machine (JSONPath, not JSONata, so the same definition runs locally
 * under aws-local-stepfunctions):
 *
 *   ValidateRun (Lambda) → QuantizeNeeded? → Quantize (Batch)
 *     → TrainAndEvaluate (Parallel)
 *         ├ Variants (Map over the variant names): Train (Batch) → EvaluateVariantNeeded? → Evaluate (Batch)
 *         └ EvaluateBaseNeeded? → EvaluateBase (Batch)
 *     → Report (Batch) → Finalize (Lambda) → RunSucceeded
 *   any error → RecordFailure (Lambda, writes status.json) → RunFailed (the stage's error and cause)
 *
 * Batch tasks use the `.sync` integration and pass only the run URI and the variant name as Batch job
 * Parameters (`moka stage <stage> --run Ref::runUri --variant Ref::variant` in the job definitions), never the
 * config itself (Batch's 8 KiB override / 30 KiB payload limits). Retries: Batch retries infrastructure failures
 * (the job definitions' retry strategies); the state machine retries only the Batch and Lambda API's throttling
 * and service errors, never States.TaskFailed on top of Batch's retries (aws-pipeline-notes.md §5).
 *
 * State names come from lib/pipeline/state-names.ts: the local runner binds Task states by them.
 */
import { Duration, Stack } from 'aws-cdk-lib';
import type * as batch from 'aws-cdk-lib/aws-batch';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { BASE_VARIANT } from '../pipeline/run-config.ts';
import { STATE_NAMES } from '../pipeline/state-names.ts';

export interface PipelineStateMachineProps {
  /** The queue every stage's job is submitted to. */
  readonly jobQueue: batch.IJobQueue;
  /** One job definition per stage; each runs `moka stage <stage> --run Ref::runUri [--variant Ref::variant]`. */
  readonly jobDefinitions: {
    readonly quantize: batch.IJobDefinition;
    readonly train: batch.IJobDefinition;
    readonly eval: batch.IJobDefinition;
    readonly report: batch.IJobDefinition;
  };
  /** Runs `validateRunInput` (functions/validate-run.ts). */
  readonly validateRunFunction: lambda.IFunction;
  /** Runs `finalizeRun` (functions/finalize.ts): records success or failure. */
  readonly finalizeFunction: lambda.IFunction;
  /** Variants trained at once. @default 4 */
  readonly variantConcurrency?: number;
  /** Whole-execution timeout; must exceed Batch attempts × attempt duration + queue wait. @default Duration.days(7) */
  readonly timeout?: Duration;
  /** Execution history at level ALL with execution data (cdk-nag SF1). @default - no logging */
  readonly logGroup?: logs.ILogGroup;
}

/** Errors of the Batch API (not of the job): safe to retry, since no job was started. */
const BATCH_API_ERRORS = [
  'Batch.AWSBatchException',
  'Batch.TooManyRequestsException',
  'Batch.ServerException',
];

export class PipelineStateMachine extends Construct {
  public readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: PipelineStateMachineProps) {
    super(scope, id);
    const concurrency = props.variantConcurrency ?? 4;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(
        `PipelineStateMachine: variantConcurrency must be a positive integer, got ${concurrency}`,
      );
    }
    const N = STATE_NAMES;

    // Failure path: record the caught error ($.error) in status.json, then fail with the stage's error and cause.
    const failed = new sfn.Fail(this, N.failed, {
      stateName: N.failed,
      errorPath: sfn.JsonPath.stringAt('$.error.Error'),
      causePath: sfn.JsonPath.stringAt('$.error.Cause'),
    });
    const recordFailure = this.lambdaTask(N.recordFailure, props.finalizeFunction, '$.finalized');
    recordFailure.next(failed);
    // If recording the failure fails too, still fail with the original error.
    recordFailure.addCatch(failed, { resultPath: '$.recordFailureError' });
    const catchTo = <T extends sfn.TaskStateBase | sfn.Parallel | sfn.Map>(state: T): T => {
      state.addCatch(recordFailure, { errors: [sfn.Errors.ALL], resultPath: '$.error' });
      return state;
    };

    const validate = catchTo(this.lambdaTask(N.validate, props.validateRunFunction, null));

    const batchJob = (name: string, def: batch.IJobDefinition, variant: string | null) => {
      const job = new tasks.BatchSubmitJob(this, name, {
        stateName: name,
        jobName:
          variant === null
            ? sfn.JsonPath.format(`{}-${name}`, sfn.JsonPath.stringAt('$.runId'))
            : sfn.JsonPath.format(`{}-${name}-{}`, sfn.JsonPath.stringAt('$.runId'), variant),
        jobQueueArn: props.jobQueue.jobQueueArn,
        jobDefinitionArn: def.jobDefinitionArn,
        payload: sfn.TaskInput.fromObject({
          runUri: sfn.JsonPath.stringAt('$.runUri'),
          ...(variant !== null ? { variant } : {}),
        }),
        integrationPattern: sfn.IntegrationPattern.RUN_JOB,
        resultPath: sfn.JsonPath.DISCARD,
      });
      job.addRetry({
        errors: BATCH_API_ERRORS,
        interval: Duration.seconds(5),
        maxAttempts: 5,
        backoffRate: 2,
      });
      return job;
    };

    const quantize = catchTo(batchJob(N.quantize, props.jobDefinitions.quantize, null));

    // Inside the Map each iteration sees {runId, runUri, variant, evaluate}.
    const train = batchJob(N.train, props.jobDefinitions.train, sfn.JsonPath.stringAt('$.variant'));
    const evaluate = batchJob(N.evaluate, props.jobDefinitions.eval, sfn.JsonPath.stringAt('$.variant'));
    const variantChain = train.next(
      new sfn.Choice(this, N.evaluateChoice, { stateName: N.evaluateChoice })
        .when(sfn.Condition.booleanEquals('$.evaluate', true), evaluate)
        .otherwise(new sfn.Pass(this, N.evaluateSkipped, { stateName: N.evaluateSkipped })),
    );
    const variantMap = new sfn.Map(this, N.variantMap, {
      stateName: N.variantMap,
      itemsPath: '$.variants',
      maxConcurrency: concurrency,
      itemSelector: {
        'runId.$': '$.runId',
        'runUri.$': '$.runUri',
        'evaluate.$': '$.evaluate',
        'variant.$': '$$.Map.Item.Value',
      },
      resultPath: sfn.JsonPath.DISCARD,
    });
    variantMap.itemProcessor(variantChain);

    const evaluateBase = batchJob(N.evaluateBase, props.jobDefinitions.eval, BASE_VARIANT);
    const baseBranch = new sfn.Choice(this, N.evaluateBaseChoice, { stateName: N.evaluateBaseChoice })
      .when(sfn.Condition.booleanEquals('$.evaluate', true), evaluateBase)
      .otherwise(new sfn.Pass(this, N.evaluateBaseSkipped, { stateName: N.evaluateBaseSkipped }));

    const variants = catchTo(
      new sfn.Parallel(this, N.variants, { stateName: N.variants, resultPath: sfn.JsonPath.DISCARD })
        .branch(variantMap)
        .branch(baseBranch),
    );

    const report = catchTo(batchJob(N.report, props.jobDefinitions.report, null));
    const finalize = catchTo(this.lambdaTask(N.finalize, props.finalizeFunction, null));
    const succeeded = new sfn.Succeed(this, N.succeeded, { stateName: N.succeeded });

    const definition = validate.next(
      new sfn.Choice(this, N.quantizeChoice, { stateName: N.quantizeChoice })
        .when(sfn.Condition.booleanEquals('$.quantizeNeeded', true), quantize.next(variants))
        .otherwise(variants)
        .afterwards()
        .next(report)
        .next(finalize)
        .next(succeeded),
    );

    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      timeout: props.timeout ?? Duration.days(7),
      tracingEnabled: true,
      ...(props.logGroup
        ? { logs: { destination: props.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true } }
        : {}),
    });

    // Stopping an execution must be able to stop its running job (the .sync policy template lists both).
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['batch:TerminateJob'],
        resources: [Stack.of(this).formatArn({ service: 'batch', resource: 'job', resourceName: '*' })],
      }),
    );
    // DescribeJobs supports no resource-level permissions (Batch's service authorization reference).
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['batch:DescribeJobs'], resources: ['*'] }),
    );
  }

  /**
   * A Lambda task whose state input is the payload and whose result (the handler's return) goes to resultPath,
   * or replaces the state when resultPath is null. (Left out rather than "$": aws-local-stepfunctions 3.0.0
   * treats an explicit `"ResultPath": "$"` as a key named "$"; the default means the same in the ASL spec.)
   * CDK's LambdaInvoke adds the retry on Lambda service errors (retryOnServiceExceptions).
   */
  private lambdaTask(name: string, fn: lambda.IFunction, resultPath: string | null): tasks.LambdaInvoke {
    return new tasks.LambdaInvoke(this, name, {
      stateName: name,
      lambdaFunction: fn,
      payloadResponseOnly: true,
      ...(resultPath !== null ? { resultPath } : {}),
    });
  }
}
