/**
 * `buildReport()`: compares runs (the base model and adapters) in report.json, report.md and one
 * self-contained report.html; see report-model.ts for the content and run-data.ts for what a run directory
 * holds. Everything is read and rendered before anything is written, and each file is written atomically, so a
 * bad input leaves nothing partial in the output directory.
 */
import { join } from 'node:path';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import { accuracyChart, gateChart, lossChart, renderSvg } from './charts.ts';
import { renderHtml } from './report-html.ts';
import { renderMarkdown } from './report-markdown.ts';
import { buildReportData, formatTextTable } from './report-model.ts';
import { readRun } from './run-data.ts';

export interface ReportOptions {
  /**
   * Each: a directory holding evals/<task>.json (from evaluate with outDir=<dir>/evals), and optionally what
   * `moka train --out <dir>` writes: adapter/, metrics.jsonl, train-config.json, train-summary.json. A run dir
   * without adapter/ is the un-adapted base row.
   */
  runDirs: readonly string[];
  /** Display names, same length as runDirs (default: the directory's basename). */
  names?: readonly string[];
  /** Writes report.json, report.md, report.html. */
  outDir: string;
}

export interface ReportSummary {
  outDir: string;
  reportJson: string;
  reportMd: string;
  reportHtml: string;
  /** The accuracy table as plain text for a terminal. */
  table: string;
}

/** Builds the report; throws UserError (before writing anything) on a missing or malformed run directory. */
export async function buildReport(opts: ReportOptions): Promise<ReportSummary> {
  if (opts.runDirs.length === 0) throw new UserError('give at least one run directory to report on');
  if (opts.names && opts.names.length !== opts.runDirs.length) {
    throw new UserError(
      `${opts.names.length} names for ${opts.runDirs.length} run directories; give one name per run`,
    );
  }
  const runs = [];
  for (let i = 0; i < opts.runDirs.length; i++) runs.push(await readRun(opts.runDirs[i]!, opts.names?.[i]));
  const seen = new Set<string>();
  for (const r of runs) {
    if (seen.has(r.name)) throw new UserError(`two runs are named "${r.name}"; give distinct names (--name)`);
    seen.add(r.name);
  }
  const data = buildReportData(runs);
  const specs = { accuracy: accuracyChart(data), loss: lossChart(data), gates: gateChart(data) };
  const charts = {
    accuracy: specs.accuracy && (await renderSvg(specs.accuracy)),
    loss: specs.loss && (await renderSvg(specs.loss)),
    gates: specs.gates && (await renderSvg(specs.gates)),
  };
  const files = {
    reportJson: join(opts.outDir, 'report.json'),
    reportMd: join(opts.outDir, 'report.md'),
    reportHtml: join(opts.outDir, 'report.html'),
  };
  const json = `${JSON.stringify(data, null, 2)}\n`;
  const md = renderMarkdown(data);
  const html = renderHtml(data, charts);
  await makeDirs(opts.outDir); // not mkdir -p: Node's never returns under /proc
  await writeFileAtomic(files.reportJson, json);
  await writeFileAtomic(files.reportMd, md);
  await writeFileAtomic(files.reportHtml, html);
  return { outDir: opts.outDir, ...files, table: formatTextTable(data) };
}
