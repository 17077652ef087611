/**
 * The ASL that `moka run` executes: the state machine of the deployable stack (the definition `cdk deploy`
 * deploys), built in memory without a synth (lib/infra/deployable-definition.ts: about a second, offline, no
 * bundling or Docker). The minimal PipelineStack (pipeline-stack.ts) gives the same states with placeholder
 * compute; it stays for tests of the construct alone.
 */
import { deployablePipelineDefinition } from './deployable-definition.ts';

export function localPipelineDefinition(opts: { variantConcurrency?: number } = {}): Record<string, unknown> {
  return deployablePipelineDefinition(
    opts.variantConcurrency !== undefined ? { variantConcurrency: String(opts.variantConcurrency) } : {},
  );
}
