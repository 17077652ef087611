/**
 * The report's content (what report.json holds, and what the Markdown and HTML renderers show): per task the
 * accuracy of every run with its standard error and its difference to the base row, trainable parameters, the
 * average over tasks, which adapter runs are Pareto-optimal in (trainable parameters, average accuracy), the loss
 * curves, the MoKA gate weights and the run configs.
 *
 * A task's accuracy is its `acc` (lm-eval multiple choice; for MMLU the micro average) or `exact_match`
 * (generation). The base row is the first run without an adapter. Deltas are in accuracy points (×100).
 */
import { BUILTIN_TASKS } from './builtin-tasks.ts';
import type { MetricValue } from './metrics.ts';
import type { GateWeight, LossPoint, RunData } from './run-data.ts';

export interface ReportTask {
  task: string;
  /** The metric shown for the task. */
  metric: string;
  protocol: string;
  protocolNote: string;
  shots: number;
  items: number;
}

export interface ReportRun {
  name: string;
  dir: string;
  adapterType: string | null;
  trainableParameters: number;
  /** task → the shown metric (null: the run has no result for the task). */
  scores: Record<string, MetricValue | null>;
  /** Mean of the shown metric over all tasks (null when a task is missing). */
  average: number | null;
  /** task → accuracy − base accuracy (null without a base row or a result). */
  deltaToBase: Record<string, number | null>;
  averageDelta: number | null;
  /** True for adapter runs no other adapter run beats with as few parameters (see paretoFront). */
  pareto: boolean;
  config: Record<string, unknown>;
}

export interface ReportData {
  format: 'moka-report';
  version: 1;
  createdAt: string;
  base: string | null;
  tasks: ReportTask[];
  runs: ReportRun[];
  losses: (LossPoint & { run: string })[];
  gates: (GateWeight & { run: string })[];
}

function primaryMetric(metrics: Record<string, MetricValue>, protocol: string): string {
  if (protocol === 'generation') return 'exact_match';
  return 'acc' in metrics ? 'acc' : Object.keys(metrics)[0]!;
}

/**
 * Indices of the Pareto-optimal points: no other point has at most as many parameters and at least the accuracy,
 * one of them strictly.
 */
export function paretoFront(points: readonly { params: number; accuracy: number }[]): Set<number> {
  const front = new Set<number>();
  points.forEach((p, i) => {
    const dominated = points.some(
      (q, j) =>
        j !== i &&
        q.params <= p.params &&
        q.accuracy >= p.accuracy &&
        (q.params < p.params || q.accuracy > p.accuracy),
    );
    if (!dominated) front.add(i);
  });
  return front;
}

/** Builds the report content from the runs (in the order given). */
export function buildReportData(runs: readonly RunData[], createdAt = new Date().toISOString()): ReportData {
  const taskNames: string[] = [];
  for (const r of runs) for (const t of r.tasks.keys()) if (!taskNames.includes(t)) taskNames.push(t);
  // Built-in tasks in their usual order (the paper's table), then the others by name.
  const builtin = [...BUILTIN_TASKS.keys()];
  const rank = (t: string) => (builtin.includes(t) ? builtin.indexOf(t) : builtin.length);
  taskNames.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const tasks: ReportTask[] = taskNames.map((task) => {
    const first = runs.find((r) => r.tasks.has(task))!.tasks.get(task)!;
    return {
      task,
      metric: primaryMetric(first.metrics, first.protocol),
      protocol: first.protocol,
      protocolNote: first.protocolNote,
      shots: first.shots,
      items: first.items,
    };
  });
  const scoreOf = (r: RunData, t: ReportTask): MetricValue | null =>
    r.tasks.get(t.task)?.metrics[t.metric] ?? null;
  const base = runs.find((r) => r.adapterType === null) ?? null;
  const average = (r: RunData) => {
    const xs = tasks.map((t) => scoreOf(r, t));
    return xs.every((x) => x !== null) ? xs.reduce((a, x) => a + x!.value, 0) / xs.length : null;
  };
  const averages = runs.map(average);
  const baseAverage = base ? averages[runs.indexOf(base)]! : null;
  const adapterRuns = runs
    .map((r, i) => ({ i, params: r.trainableParameters, accuracy: averages[i]! }))
    .filter((p) => runs[p.i]!.adapterType !== null && p.params > 0 && p.accuracy !== null);
  const front = paretoFront(adapterRuns.map((p) => ({ params: p.params, accuracy: p.accuracy! })));
  const onFront = new Set([...front].map((k) => adapterRuns[k]!.i));

  const reportRuns: ReportRun[] = runs.map((r, i) => {
    const scores = Object.fromEntries(tasks.map((t) => [t.task, scoreOf(r, t)]));
    const avg = averages[i]!;
    return {
      name: r.name,
      dir: r.dir,
      adapterType: r.adapterType,
      trainableParameters: r.trainableParameters,
      scores,
      average: avg,
      deltaToBase: Object.fromEntries(
        tasks.map((t) => {
          const s = scores[t.task];
          const b = base ? scoreOf(base, t) : null;
          return [t.task, s && b ? 100 * (s.value - b.value) : null];
        }),
      ),
      averageDelta: avg !== null && baseAverage !== null ? 100 * (avg - baseAverage) : null,
      pareto: onFront.has(i),
      config: r.config,
    };
  });
  return {
    format: 'moka-report',
    version: 1,
    createdAt,
    base: base?.name ?? null,
    tasks,
    runs: reportRuns,
    losses: runs.flatMap((r) => r.losses.map((l) => ({ run: r.name, ...l }))),
    gates: runs.flatMap((r) => r.gates.map((g) => ({ run: r.name, ...g }))),
  };
}

/** "1.23M", "45.6K", "789" */
export function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** A percentage with its stderr: "61.20 ± 1.40". */
export function formatScore(m: MetricValue | null): string {
  if (m === null) return '—';
  return `${(100 * m.value).toFixed(2)}${m.stderr === null ? '' : ` ± ${(100 * m.stderr).toFixed(2)}`}`;
}

/** A signed delta in points: "+1.20", "−0.40". */
export function formatDelta(d: number | null): string {
  if (d === null) return '';
  return `${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)}`;
}

/**
 * The accuracy table as rows of cells (header first): run, type, trainable params, tasks…, average. Without
 * `stderr`, cells hold the accuracy and its delta only (the terminal table).
 */
export function accuracyTable(data: ReportData, opts: { stderr?: boolean } = {}): string[][] {
  const withSe = opts.stderr ?? true;
  const head = [
    'run',
    'adapter',
    'trainable',
    ...data.tasks.map((t) => `${t.task} (${t.metric})`),
    'average',
  ];
  const rows = data.runs.map((r) => [
    r.name + (r.pareto ? ' *' : ''),
    r.adapterType ?? 'base',
    r.adapterType ? formatParams(r.trainableParameters) : '0',
    ...data.tasks.map((t) => {
      const d = r.adapterType ? formatDelta(r.deltaToBase[t.task] ?? null) : '';
      const score = formatScore(r.scores[t.task] ?? null);
      return `${withSe ? score : score.split(' ± ')[0]}${d ? ` (${d})` : ''}`;
    }),
    r.average === null
      ? '—'
      : `${(100 * r.average).toFixed(2)}${r.adapterType && r.averageDelta !== null ? ` (${formatDelta(r.averageDelta)})` : ''}`,
  ]);
  return [head, ...rows];
}

/** The accuracy table as aligned plain text for a terminal. */
export function formatTextTable(data: ReportData): string {
  const rows = accuracyTable(data, { stderr: false });
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => [...r[c]!].length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => cell + ' '.repeat(w[c]! - [...cell].length))
      .join('  ')
      .trimEnd();
  return [line(rows[0]!), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}
