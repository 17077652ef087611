/** `moka start`: start a run on the deployed AWS stack (upload its config and local inputs, start the execution). */
import type { Command } from 'commander';
import {
  addDeployedStackOptions,
  openDeployedStack,
  type DeployedStackOptions,
} from './deployed-stack-options.ts';

export function registerStart(program: Command): void {
  addDeployedStackOptions(
    program
      .command('start')
      .description(
        'start a run on the deployed AWS stack: upload the run config (and the local files it names) to the ' +
          "stack's bucket, start a Step Functions execution, print its console link",
      )
      .argument('<config>', 'run config JSON (local paths in it are uploaded under inputs/<runId>/)'),
  )
    .option(
      '--run-id <id>',
      "the runId (default: the config's, else a new one); an earlier runId resumes that run",
    )
    .option('--json', 'print the result as JSON')
    .action(async (config: string, opts: DeployedStackOptions & { runId?: string; json?: boolean }) => {
      const { clients, stack } = await openDeployedStack(opts);
      const { startDeployedRun } = await import('../../lib/pipeline/deployed-run.ts');
      const started = await startDeployedRun(clients, stack, {
        configPath: config,
        runId: opts.runId,
        onUpload: (local, uri) =>
          process.stderr.write(
            opts.json || !process.stderr.isTTY
              ? `${JSON.stringify({ event: 'upload', local, uri })}\n`
              : `uploading ${local} → ${uri}\n`,
          ),
      });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(started, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `${started.resumed ? 'resumed' : 'started'} run ${started.runId} (execution ${started.executionName})\n` +
          `config    ${started.configUri}\n` +
          `console   ${started.consoleLink}\n` +
          `follow    moka status ${started.runId} --stack ${stack.name}   /   moka logs ${started.runId} --follow --stack ${stack.name}\n`,
      );
    });
}
