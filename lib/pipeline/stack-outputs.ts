/**
 * The deployable stack's CloudFormation output keys (written by lib/infra/moka-pipeline-stack.ts, read by the
 * `moka start | status | logs | fetch` commands) and its default name. No imports: the CLI reads these at start.
 */

export const STACK_OUTPUTS = {
  bucket: 'BucketName',
  stateMachineArn: 'StateMachineArn',
  consoleLink: 'ConsoleLink',
  exampleInput: 'ExampleInput',
  jobLogGroup: 'JobLogGroupName',
  stateMachineLogGroup: 'StateMachineLogGroupName',
  jobQueueArn: 'JobQueueArn',
  alarmTopicArn: 'AlarmTopicArn',
} as const;

/** The stack name the commands use when --stack is not given (the CDK app's default stackName). */
export const DEFAULT_STACK_NAME = 'MokaPipeline';
