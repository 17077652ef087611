/**
 * The minimal pipeline stack: the PipelineStateMachine with placeholder compute (an imported job queue and job
 * definitions) and its two Lambdas. It synthesizes offline, without credentials or Docker, which is all `moka run`
 * needs (it executes the extracted definition locally, binding every Task state to local code); the deployable
 * stacks with real Batch resources reuse the same construct.
 *
 * functions: 'bundled' builds the Lambdas with NodejsFunction (esbuild, offline); 'imported' (the default, fast)
 * refers to placeholder function ARNs, since the local runner never calls them.
 */
import { ArnFormat, Stack, type StackProps } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import type { Construct } from 'constructs';
import { fileURLToPath } from 'node:url';
import { STAGE_NAMES, type StageName } from '../pipeline/state-names.ts';
import { PLACEHOLDER_ENV } from './asl.ts';
import { PipelineStateMachine } from './pipeline-state-machine.ts';

export interface PipelineStackProps extends StackProps {
  /** @default 'imported' */
  readonly functions?: 'bundled' | 'imported';
  readonly variantConcurrency?: number;
}

export class PipelineStack extends Stack {
  public readonly pipeline: PipelineStateMachine;

  constructor(scope: Construct, id: string, props: PipelineStackProps = {}) {
    super(scope, id, { env: PLACEHOLDER_ENV, ...props });
    const arn = (resource: string) => this.formatArn({ service: 'batch', resource, arnFormat: undefined });
    const jobQueue = batch.JobQueue.fromJobQueueArn(this, 'JobQueue', arn('job-queue/moka-local'));
    const jobDefinitions = Object.fromEntries(
      STAGE_NAMES.map((s) => [
        s,
        batch.EcsJobDefinition.fromJobDefinitionArn(
          this,
          `${s}JobDefinition`,
          arn(`job-definition/moka-${s}:1`),
        ),
      ]),
    ) as Record<StageName, batch.IJobDefinition>;

    const fn = (name: string, file: string): lambda.IFunction => {
      if ((props.functions ?? 'imported') === 'imported') {
        return lambda.Function.fromFunctionArn(
          this,
          name,
          this.formatArn({
            service: 'lambda',
            resource: 'function',
            resourceName: `moka-${name}`,
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        );
      }
      return new nodejs.NodejsFunction(this, name, {
        entry: fileURLToPath(new URL(`../../functions/${file}`, import.meta.url)),
        handler: 'handler',
        runtime: lambda.Runtime.NODEJS_20_X,
        bundling: { format: nodejs.OutputFormat.ESM, target: 'node20', externalModules: ['@aws-sdk/*'] },
      });
    };

    this.pipeline = new PipelineStateMachine(this, 'Pipeline', {
      jobQueue,
      jobDefinitions,
      validateRunFunction: fn('ValidateRun', 'validate-run.ts'),
      finalizeFunction: fn('Finalize', 'finalize.ts'),
      ...(props.variantConcurrency !== undefined ? { variantConcurrency: props.variantConcurrency } : {}),
    });
  }
}
