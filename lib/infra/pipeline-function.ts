/**
 * The pipeline's Lambda functions (`functions/*.ts`): TypeScript bundled by esbuild (`NodejsFunction`; the
 * project's own esbuild, so synth needs no Docker), on the newest Node.js runtime, ESM, arm64, with JSON log
 * format and a log group of their own with retention.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { acknowledge } from './nag.ts';
import { Construct } from 'constructs';
import { fileURLToPath } from 'node:url';

/** The repository root (entries and the lock file are found from it). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The Lambda runtime of every function (Node.js 22.x or newer is required; 24.x is the newest Lambda offers). */
export const FUNCTION_RUNTIME = lambda.Runtime.NODEJS_24_X;

export interface PipelineFunctionProps {
  /** The handler file, relative to the repository root (e.g. `functions/validate-run.ts`); it exports `handler`. */
  readonly entry: string;
  readonly description: string;
  readonly environment?: Readonly<Record<string, string>>;
  readonly logRetention: logs.RetentionDays;
  /** @default 1 minute */
  readonly timeout?: Duration;
  /** @default 512 MiB */
  readonly memorySize?: number;
}

export class PipelineFunction extends Construct {
  public readonly function: nodejs.NodejsFunction;
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: PipelineFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.function = new nodejs.NodejsFunction(this, 'Function', {
      entry: `${REPO_ROOT}${props.entry}`,
      handler: 'handler',
      projectRoot: REPO_ROOT,
      depsLockFilePath: `${REPO_ROOT}package-lock.json`,
      runtime: FUNCTION_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      description: props.description,
      environment: { NODE_OPTIONS: '--enable-source-maps', ...props.environment },
      timeout: props.timeout ?? Duration.minutes(1),
      memorySize: props.memorySize ?? 512,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      bundling: {
        format: nodejs.OutputFormat.ESM,
        // Bundle the AWS SDK too: the versions tested here, not whatever the runtime carries.
        bundleAwsSDK: true,
        minify: true,
        sourceMap: true,
        target: 'node22',
        // ESM bundles of CommonJS packages still call require(): give them one.
        banner:
          "import { createRequire as __mokaCreateRequire } from 'node:module'; const require = __mokaCreateRequire(import.meta.url);",
      },
    });
    acknowledge(
      this,
      'AWSLambdaBasicExecutionRole only lets the function write its own logs; it is the policy AWS maintains for that.',
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
    );
  }
}
