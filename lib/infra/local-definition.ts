/**
 * The ASL that `moka run` executes: the minimal PipelineStack synthesized in memory (offline, no bundling) and its
 * state machine definition extracted with the intrinsics resolved.
 */
import { App } from 'aws-cdk-lib';
import { extractStateMachineDefinition } from './asl.ts';
import { PipelineStack } from './pipeline-stack.ts';

export function localPipelineDefinition(opts: { variantConcurrency?: number } = {}): Record<string, unknown> {
  const app = new App({ outdir: undefined });
  const stack = new PipelineStack(app, 'MokaPipelineLocal', {
    functions: 'imported',
    ...(opts.variantConcurrency !== undefined ? { variantConcurrency: opts.variantConcurrency } : {}),
  });
  return extractStateMachineDefinition(stack);
}
