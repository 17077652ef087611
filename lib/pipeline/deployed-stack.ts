/**
 * A deployed pipeline stack, as the `moka start | status | logs | fetch` commands see it: its resources come
 * from the CloudFormation stack's outputs (the output keys below are what lib/infra/moka-pipeline-stack.ts
 * writes), and runs are Step Functions executions whose name is the runId (or `<runId>--r<base36 time>` when
 * a runId is started again to resume it: execution names stay taken for 90 days).
 */
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { S3Client } from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  ListExecutionsCommand,
  SFNClient,
  type DescribeExecutionCommandOutput,
} from '@aws-sdk/client-sfn';
import { UserError } from '../errors.ts';

export { DEFAULT_STACK_NAME, STACK_OUTPUTS } from './stack-outputs.ts';
import { STACK_OUTPUTS } from './stack-outputs.ts';

export interface AwsClients {
  readonly cfn: Pick<CloudFormationClient, 'send'>;
  readonly sfn: Pick<SFNClient, 'send'>;
  readonly s3: S3Client;
  readonly logs: Pick<CloudWatchLogsClient, 'send'>;
}

/** SDK clients for a region (default: the SDK's chain: AWS_REGION, the profile). */
export function awsClients(region?: string): AwsClients {
  const config = region ? { region } : {};
  return {
    cfn: new CloudFormationClient(config),
    sfn: new SFNClient(config),
    s3: new S3Client(config),
    logs: new CloudWatchLogsClient(config),
  };
}

export interface DeployedStack {
  readonly name: string;
  readonly region: string;
  readonly bucket: string;
  readonly stateMachineArn: string;
  readonly jobLogGroup: string;
  readonly stateMachineLogGroup?: string;
}

/**
 * Turns the AWS errors a user can fix (no credentials, no region, access denied) into one-line UserErrors;
 * other errors are returned as they are.
 */
export function awsUserError(err: unknown, doing: string): unknown {
  const name = (err as Error)?.name ?? '';
  const message = (err as Error)?.message ?? String(err);
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(message)) {
    return new UserError(
      `${doing}: no AWS credentials found; set AWS_PROFILE (or run aws configure / aws sso login)`,
    );
  }
  if (/Region is missing/i.test(message)) {
    return new UserError(`${doing}: no AWS region; pass --region or set AWS_REGION`);
  }
  if (name === 'AccessDeniedException' || name === 'AccessDenied' || name === 'UnauthorizedOperation') {
    return new UserError(`${doing}: access denied (${message}); use credentials allowed to read the stack`);
  }
  if (name === 'ExpiredTokenException' || name === 'ExpiredToken') {
    return new UserError(`${doing}: the AWS session has expired; log in again (aws sso login)`);
  }
  return err;
}

/** Reads a deployed stack's outputs. @throws UserError when the stack does not exist or is not a moka stack. */
export async function describeDeployedStack(
  clients: Pick<AwsClients, 'cfn'>,
  name: string,
): Promise<DeployedStack> {
  let stack;
  try {
    stack = (await clients.cfn.send(new DescribeStacksCommand({ StackName: name }))).Stacks?.[0];
  } catch (err) {
    if ((err as Error).name === 'ValidationError' && /does not exist/.test((err as Error).message)) {
      throw new UserError(
        `stack ${name} does not exist in this account and region; deploy it (npx cdk deploy) or pass --stack/--region`,
      );
    }
    throw awsUserError(err, `reading stack ${name}`);
  }
  if (!stack) throw new UserError(`stack ${name} does not exist; deploy it (npx cdk deploy) or pass --stack`);
  const outputs = Object.fromEntries((stack.Outputs ?? []).map((o) => [o.OutputKey, o.OutputValue]));
  const need = (key: string) => {
    const v = outputs[key];
    if (!v) {
      throw new UserError(
        `stack ${name} has no output ${key}: it is not a moka pipeline stack, or its deployment is not finished (${stack.StackStatus})`,
      );
    }
    return v;
  };
  const stateMachineArn = need(STACK_OUTPUTS.stateMachineArn);
  return {
    name,
    region: stateMachineArn.split(':')[3] ?? '',
    bucket: need(STACK_OUTPUTS.bucket),
    stateMachineArn,
    jobLogGroup: need(STACK_OUTPUTS.jobLogGroup),
    stateMachineLogGroup: outputs[STACK_OUTPUTS.stateMachineLogGroup],
  };
}

/** The ARN of the execution `name` of a state machine (`…:stateMachine:M` → `…:execution:M:name`). */
export function executionArnOf(stateMachineArn: string, name: string): string {
  return `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
}

/** The Step Functions console page of an execution. */
export function executionConsoleLink(executionArn: string): string {
  const region = executionArn.split(':')[3];
  return `https://${region}.console.aws.amazon.com/states/home?region=${region}#/v2/executions/details/${executionArn}`;
}

/** The execution name of a later start of `runId` (which resumes it). */
export function resumeExecutionName(runId: string, now = new Date()): string {
  return `${runId.slice(0, 61)}--r${now.getTime().toString(36)}`;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The newest execution of run `run`: the execution named `run`, or the newest named `<run>--r<time>` (a later
 * `moka start` that resumes it) or `<run>--u<hash>` (an upload of a config naming the run) among the latest 1000.
 * @throws UserError when there is none.
 */
export async function findRunExecution(
  clients: Pick<AwsClients, 'sfn'>,
  stack: DeployedStack,
  run: string,
): Promise<DescribeExecutionCommandOutput> {
  const describe = (executionArn: string) => clients.sfn.send(new DescribeExecutionCommand({ executionArn }));
  let exact: DescribeExecutionCommandOutput | null = null;
  try {
    exact = await describe(executionArnOf(stack.stateMachineArn, run));
  } catch (err) {
    if ((err as Error).name !== 'ExecutionDoesNotExist') throw awsUserError(err, `looking up run ${run}`);
  }
  // A resumed run has newer executions `<run>--r<time>`; they are listed newest first.
  // `--r<time>` from `moka start`, `--u<hash>` from an upload of a config naming its runId.
  const resumed = new RegExp(`^${escapeRegExp(run.slice(0, 61))}--[ru][0-9a-z]+$`);
  let nextToken: string | undefined;
  for (let page = 0; page < 10; page++) {
    const r = await clients.sfn.send(
      new ListExecutionsCommand({ stateMachineArn: stack.stateMachineArn, maxResults: 100, nextToken }),
    );
    for (const e of r.executions ?? []) {
      if (exact && e.startDate && exact.startDate && e.startDate <= exact.startDate) return exact;
      if (e.name && resumed.test(e.name) && e.executionArn) return describe(e.executionArn);
    }
    nextToken = r.nextToken;
    if (!nextToken) break;
  }
  if (exact) return exact;
  throw new UserError(
    `no execution of run ${run} in stack ${stack.name}; check the runId (moka status lists none)`,
  );
}
