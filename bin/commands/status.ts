/** `moka status`: where a run on the deployed stack stands (execution, active states, each stage's job). */
import type { Command } from 'commander';
import {
  addDeployedStackOptions,
  openDeployedStack,
  type DeployedStackOptions,
} from './deployed-stack-options.ts';

export function registerStatus(program: Command): void {
  addDeployedStackOptions(
    program
      .command('status')
      .description("show a deployed run's execution status, its running states and each stage's progress")
      .argument('<run>', 'the runId'),
  )
    .option('--json', 'print the status as JSON')
    .action(async (run: string, opts: DeployedStackOptions & { json?: boolean }) => {
      const { clients, stack } = await openDeployedStack(opts);
      const { deployedRunStatus } = await import('../../lib/pipeline/deployed-run.ts');
      const s = await deployedRunStatus(clients, stack, run);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
        return;
      }
      const e = s.execution;
      const lines = [
        `run        ${s.runId}`,
        `execution  ${e.name}  ${e.status}  started ${e.startDate ?? '-'}${e.stopDate ? `  stopped ${e.stopDate}` : ''}`,
        `console    ${e.consoleLink}`,
      ];
      if (s.activeStates.length > 0) lines.push(`running    ${s.activeStates.join(', ')}`);
      if (e.error) lines.push(`error      ${e.error}: ${e.cause ?? ''}`);
      if (s.stages.length > 0) {
        lines.push('', `${'stage'.padEnd(24)}${'status'.padEnd(11)}${'started'.padEnd(26)}detail`);
        for (const st of s.stages) {
          const progress = st.progress
            ? `step ${st.progress.step}${st.progress.loss !== undefined ? `, loss ${st.progress.loss.toFixed(4)}` : ''}`
            : '';
          const detail = [progress, st.detail, st.error].filter(Boolean).join('; ');
          lines.push(`${st.id.padEnd(24)}${st.status.padEnd(11)}${(st.startedAt ?? '').padEnd(26)}${detail}`);
        }
      } else if (e.status === 'RUNNING') {
        lines.push('', 'no stage has started yet (the run is being validated or waits for a GPU instance)');
      }
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
