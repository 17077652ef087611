/** Evaluation and reports: the public surface of lib/eval (what `moka eval`, `moka report` and the pipeline use). */
export {
  evaluate,
  formatEvalTable,
  type EvaluateOptions,
  type EvalSummary,
  type MetricValue,
  type TaskResult,
} from './evaluate.ts';
export { BUILTIN_TASKS } from './builtin-tasks.ts';
export { taskNameList } from './load-tasks.ts';
export { buildReport, type ReportOptions, type ReportSummary } from './report.ts';
