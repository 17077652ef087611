/** The options every command for a deployed stack shares (`--stack`, `--region`), and opening the stack. */
import type { Command } from 'commander';
import type { AwsClients, DeployedStack } from '../../lib/pipeline/deployed-stack.ts';
import { DEFAULT_STACK_NAME } from '../../lib/pipeline/stack-outputs.ts';

export interface DeployedStackOptions {
  stack: string;
  region?: string;
}

export function addDeployedStackOptions(cmd: Command): Command {
  return cmd
    .option(
      '--stack <name>',
      'the deployed pipeline stack (env MOKA_STACK)',
      process.env.MOKA_STACK ?? DEFAULT_STACK_NAME,
    )
    .option('--region <region>', "the stack's AWS region (default: AWS_REGION or the profile's)");
}

/** The stack's resources (from its CloudFormation outputs) and clients in its region. */
export async function openDeployedStack(
  opts: DeployedStackOptions,
): Promise<{ clients: AwsClients; stack: DeployedStack }> {
  // Loaded here, not at the top: the other commands start without the AWS SDK.
  const { awsClients, describeDeployedStack } = await import('../../lib/pipeline/deployed-stack.ts');
  const clients = awsClients(opts.region);
  const stack = await describeDeployedStack(clients, opts.stack);
  return { clients: opts.region || !stack.region ? clients : awsClients(stack.region), stack };
}
