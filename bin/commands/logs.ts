/** `moka logs`: a deployed run's job logs (CloudWatch), optionally followed until the run ends. */
import type { Command } from 'commander';
import {
  addDeployedStackOptions,
  openDeployedStack,
  type DeployedStackOptions,
} from './deployed-stack-options.ts';

export function registerLogs(program: Command): void {
  addDeployedStackOptions(
    program
      .command('logs')
      .description("print a deployed run's Batch job logs (each line prefixed by its job's log stream)")
      .argument('<run>', 'the runId'),
  )
    .option('-f, --follow', 'keep printing new lines until the execution ends')
    .action(async (run: string, opts: DeployedStackOptions & { follow?: boolean }) => {
      const { clients, stack } = await openDeployedStack(opts);
      const { printRunLogs } = await import('../../lib/pipeline/deployed-run.ts');
      const status = await printRunLogs(clients, stack, run, {
        follow: opts.follow ?? false,
        write: (l) => process.stdout.write(`${l.stream.split('/')[0]} | ${l.message}\n`),
      });
      if (opts.follow) process.stderr.write(`execution ${status}\n`);
    });
}
