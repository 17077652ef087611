/**
 * How training shows progress: a cli-progress bar with ETA when the log stream is a terminal, one JSON object per
 * line otherwise (containers, CI, Batch logs), or nothing. The metrics file is separate and always complete; this
 * is only what a person or a log collector watches.
 */
import cliProgress from 'cli-progress';

export type ProgressMode = 'auto' | 'bar' | 'json' | 'none';

export interface StepReport {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
  evalLoss?: number;
  /** Seconds left at the current pace. */
  etaSec: number;
}

export interface ProgressReporter {
  /** A notable event (start, eval, checkpoint, stop, warning): one JSON line, or a text line above the bar. */
  event(name: string, fields: Record<string, unknown>, text: string): void;
  step(report: StepReport): void;
  close(): void;
}

const fmt = (x: number | undefined, digits = 4) =>
  x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);

export function createProgress(
  mode: ProgressMode,
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  opts: { logEvery: number; startStep: number; totalSteps: number },
): ProgressReporter {
  const resolved = mode === 'auto' ? (stream.isTTY ? 'bar' : 'json') : mode;
  if (resolved === 'none') return { event() {}, step() {}, close() {} };
  if (resolved === 'json') {
    const write = (obj: Record<string, unknown>) => stream.write(`${JSON.stringify(obj)}\n`);
    return {
      event: (name, fields) => write({ event: name, ...fields }),
      step(r) {
        if (r.step % opts.logEvery === 0 || r.step === r.totalSteps || r.evalLoss !== undefined) {
          write({ event: 'train.step', ...r });
        }
      },
      close() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format:
        'train |{bar}| {value}/{total} steps | loss {loss} | eval {evalLoss} | lr {lr} | {tps} tok/s | ETA {etaText}',
      stream,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let stopped = false;
  let lastEval: number | undefined;
  let last: StepReport | undefined;
  // Our own ETA (seconds per step of this process × steps left): the bar's would restart with every event line
  // and count the steps of a resumed run's earlier part as instant.
  const payload = () => ({
    loss: fmt(last?.loss),
    evalLoss: fmt(lastEval),
    lr: last ? last.lr.toExponential(2) : '-',
    tps: last ? Math.round(last.tokensPerSec) : '-',
    etaText: last ? formatDuration(last.etaSec) : '-',
  });
  return {
    event(name, _fields, text) {
      if (!started || stopped) {
        stream.write(`${text}\n`);
        return;
      }
      // Text above the bar: stop it, print, and draw it again where it was (not after the final event).
      bar.stop();
      stream.write(`${text}\n`);
      if (name === 'train.end') stopped = true;
      else bar.start(opts.totalSteps, last?.step ?? opts.startStep, payload());
    },
    step(r) {
      last = r;
      if (r.evalLoss !== undefined) lastEval = r.evalLoss;
      if (!started) {
        started = true;
        bar.start(opts.totalSteps, opts.startStep, payload());
      }
      bar.update(r.step, payload());
    },
    close() {
      if (started && !stopped) bar.stop();
      stopped = true;
    },
  };
}

/** 75 → "1m15s", 3725 → "1h02m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
