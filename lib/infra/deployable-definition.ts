/**
 * The state machine definition of the deployable stack (MokaPipelineStack), as the local runner executes it —
 * without a full synth: the stack is constructed in memory with Lambda bundling and asset staging off (neither
 * changes the definition), and only its state machine's DefinitionString is resolved, then its intrinsics
 * replaced by placeholders exactly as lib/infra/asl.ts does for a synthesized template. About a second instead of
 * a synth's ten; a test checks that both give the same definition.
 */
import { App, CfnResource, Stack } from 'aws-cdk-lib';
import type { CfnStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import type { IConstruct } from 'constructs';
import { PLACEHOLDER_ENV, placeholderEnv, resolveIntrinsics } from './asl.ts';
import { MokaPipelineStack } from './moka-pipeline-stack.ts';
import { parseStackOptions } from './stack-options.ts';

/** Every CloudFormation resource of a stack, by logical id (what resolveIntrinsics needs to name placeholders). */
function resourceTypes(stack: Stack): Record<string, { Type: string }> {
  const out: Record<string, { Type: string }> = {};
  const walk = (c: IConstruct) => {
    if (CfnResource.isCfnResource(c)) out[stack.getLogicalId(c)] = { Type: c.cfnResourceType };
    for (const child of c.node.children) walk(child);
  };
  walk(stack);
  return out;
}

/** The ASL of a MokaPipelineStack's state machine, intrinsics resolved to placeholders. */
export function stackStateMachineDefinition(stack: MokaPipelineStack): Record<string, unknown> {
  const cfn = stack.pipeline.stateMachine.node.defaultChild as CfnStateMachine;
  const text = resolveIntrinsics(
    stack.resolve(cfn.definitionString),
    resourceTypes(stack),
    placeholderEnv(stack),
  );
  if (typeof text !== 'string')
    throw new Error('stackStateMachineDefinition: the definition did not resolve to a string');
  return JSON.parse(text) as Record<string, unknown>;
}

/**
 * The definition that `cdk deploy` deploys (for the given context options, default: none), built in memory.
 * @throws UserError for bad options, as the CDK app does.
 */
export function deployablePipelineDefinition(
  context: Readonly<Record<string, unknown>> = {},
): Record<string, unknown> {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [], 'aws:cdk:disable-asset-staging': true } });
  const stack = new MokaPipelineStack(app, 'MokaPipelineLocal', {
    options: parseStackOptions(context),
    env: PLACEHOLDER_ENV,
  });
  return stackStateMachineDefinition(stack);
}
