/**
 * `moka report RUN_DIR... --out DIR`: compares runs (each: evals/<task>.json, and what `moka train` wrote) in
 * report.json, report.md and a self-contained report.html, and prints the accuracy table. See lib/eval/report.ts.
 */
import type { Command } from 'commander';
import { buildReport } from '../../lib/eval/index.ts';
import { collect } from './cli-helpers.ts';

interface ReportCommandOptions {
  out: string;
  name: string[];
  json?: boolean;
}

export function registerReport(program: Command): void {
  program
    .command('report')
    .description('compare runs (base model and adapters) in report.json, report.md and report.html')
    .argument(
      '<runDirs...>',
      'run directories: each holds evals/<task>.json (and optionally adapter/, metrics.jsonl, …)',
    )
    .requiredOption('--out <dir>', 'where report.json, report.md and report.html go')
    .option(
      '--name <name>',
      'display name of each run, in order (repeatable; default: the directory name)',
      collect,
      [],
    )
    .option('--json', 'print the file paths and table as JSON')
    .action(async (runDirs: string[], opts: ReportCommandOptions) => {
      const summary = await buildReport({
        runDirs,
        ...(opts.name.length ? { names: opts.name } : {}),
        outDir: opts.out,
      });
      process.stdout.write(
        opts.json
          ? `${JSON.stringify(summary, null, 2)}\n`
          : `${summary.table}\n\nwrote ${summary.reportHtml}\n`,
      );
    });
}
