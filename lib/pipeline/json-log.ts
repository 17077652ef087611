/**
 * Structured logs for Lambdas and containers: one JSON object per line on stdout, with `time`, `level` and
 * `msg` first, so CloudWatch Logs Insights can filter on any field (`filter level = "error"`,
 * `filter runId = "…"`).
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type LogFields = Readonly<Record<string, unknown>>;

/** A logger: `log('info', 'execution started', { runId })`. */
export type JsonLogger = (level: LogLevel, msg: string, fields?: LogFields) => void;

/** The JSON line of one record (errors become `{name, message}`, not `{}`). */
export function jsonLine(level: LogLevel, msg: string, fields: LogFields = {}, now = new Date()): string {
  return JSON.stringify({ time: now.toISOString(), level, msg, ...fields }, (_key, value: unknown) =>
    value instanceof Error ? { name: value.name, message: value.message } : value,
  );
}

/** A logger writing JSON lines to `write` (default: stdout). */
export function jsonLogger(write: (line: string) => void = (l) => process.stdout.write(l)): JsonLogger {
  return (level, msg, fields) => write(`${jsonLine(level, msg, fields)}\n`);
}
