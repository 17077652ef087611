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
        'train |{bar}| {value}/{total} steps | loss {loss} | eval {evalLoss} | lr {lr} | {tps} tok/s | ETA {eta_formatted}',
      stream,
      hideCursor: true,
      // The bar's own ETA averages the last steps; a run resumed at step k must not count k steps as instant.
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let lastEval: number | undefined;
  const payload = (r?: StepReport) => ({
    loss: fmt(r?.loss),
    evalLoss: fmt(lastEval),
    lr: r ? r.lr.toExponential(2) : '-',
    tps: r ? Math.round(r.tokensPerSec) : '-',
  });
  const ensureStarted = () => {
    if (started) return;
    started = true;
    bar.start(opts.totalSteps, opts.startStep, payload());
  };
  return {
    event(_name, _fields, text) {
      // Text above the bar: stop it, print, restart at the same value.
      if (started) {
        const value = bar.getProgress() * opts.totalSteps;
        bar.stop();
        stream.write(`${text}\n`);
        bar.start(opts.totalSteps, Math.round(value), payload());
      } else {
        stream.write(`${text}\n`);
      }
    },
    step(r) {
      ensureStarted();
      if (r.evalLoss !== undefined) lastEval = r.evalLoss;
      bar.update(r.step, payload(r));
    },
    close() {
      if (started) bar.stop();
    },
  };
}
