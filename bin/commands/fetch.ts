/** `moka fetch`: download a deployed run's adapters and report. */
import type { Command } from 'commander';
import {
  addDeployedStackOptions,
  openDeployedStack,
  type DeployedStackOptions,
} from './deployed-stack-options.ts';

export function registerFetch(program: Command): void {
  addDeployedStackOptions(
    program
      .command('fetch')
      .description(
        "download a deployed run's finished adapters and report (with its config.json and status.json)",
      )
      .argument('<run>', 'the runId')
      .requiredOption('--out <dir>', 'local folder (gets variants/<name>/adapter/ and report/)'),
  )
    .option('--json', 'print the result as JSON')
    .action(async (run: string, opts: DeployedStackOptions & { out: string; json?: boolean }) => {
      const { clients, stack } = await openDeployedStack(opts);
      const { fetchDeployedRun } = await import('../../lib/pipeline/deployed-run.ts');
      const r = await fetchDeployedRun(clients, stack, run, opts.out, (key) =>
        process.stderr.write(
          process.stderr.isTTY ? `downloading ${key}\n` : `${JSON.stringify({ event: 'download', key })}\n`,
        ),
      );
      if (opts.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else process.stdout.write(`run ${r.runId} (${r.status}): ${r.folders.join(', ')}\n`);
    });
}
