/**
 * How long-running work shows progress: a cli-progress bar when the log stream is a terminal, one JSON object per
 * line otherwise (containers, CI, Batch logs), or nothing. Two reporters share that policy: training's (steps,
 * loss, ETA; the metrics file is separate and always complete, this is only what a person or a log collector
 * watches) and the phase reporter of `moka quantize` / `moka dequantize` (done/total per phase).
 */
import cliProgress from 'cli-progress';

export type ProgressMode = 'auto' | 'bar' | 'json' | 'none';

type LogStream = NodeJS.WritableStream & { isTTY?: boolean };

/** 'auto' is a bar on a terminal and JSON lines anywhere else. */
export function resolveProgressMode(mode: ProgressMode, stream: LogStream): 'bar' | 'json' | 'none' {
  return mode === 'auto' ? (stream.isTTY ? 'bar' : 'json') : mode;
}

function jsonLines(stream: LogStream): (obj: Record<string, unknown>) => void {
  return (obj) => stream.write(`${JSON.stringify(obj)}\n`);
}

function progressBar(format: string, stream: LogStream): cliProgress.SingleBar {
  return new cliProgress.SingleBar({ format, stream, hideCursor: true }, cliProgress.Presets.shades_classic);
}

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
  stream: LogStream,
  opts: { logEvery: number; startStep: number; totalSteps: number },
): ProgressReporter {
  const resolved = resolveProgressMode(mode, stream);
  if (resolved === 'none') return { event() {}, step() {}, close() {} };
  if (resolved === 'json') {
    const write = jsonLines(stream);
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
  const bar = progressBar(
    'train |{bar}| {value}/{total} steps | loss {loss} | eval {evalLoss} | lr {lr} | {tps} tok/s | ETA {etaText}',
    stream,
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

export interface PhaseProgressReporter {
  /** `done`/`total` in any unit; `label` says what is being done; `extra` goes into the JSON line. */
  update(phase: string, done: number, total: number, label: string, extra?: Record<string, unknown>): void;
  stop(): void;
}

/**
 * Progress of a command that works through phases (quantize, write, …): a bar per phase on a terminal; otherwise
 * JSON lines `{"event": "progress", command, phase, percent, done, total, label, ...extra}`, at most one per
 * percent per phase (a 7B model has thousands of tensors), so logs stay readable. Default: stderr, mode auto,
 * which keeps stdout clean for the command's result.
 */
export function createPhaseProgress(
  command: string,
  opts: { mode?: ProgressMode; stream?: LogStream } = {},
): PhaseProgressReporter {
  const stream = opts.stream ?? process.stderr;
  const resolved = resolveProgressMode(opts.mode ?? 'auto', stream);
  if (resolved === 'none') return { update() {}, stop() {} };
  if (resolved === 'json') {
    const write = jsonLines(stream);
    let lastPhase = '';
    let lastPercent = -1;
    return {
      update(phase, done, total, label, extra = {}) {
        const percent = total > 0 ? Math.floor((100 * done) / total) : 100;
        if (phase === lastPhase && percent === lastPercent) return;
        lastPhase = phase;
        lastPercent = percent;
        write({ event: 'progress', command, phase, percent, done, total, label, ...extra });
      },
      stop() {},
    };
  }
  let bar: cliProgress.SingleBar | null = null;
  let barPhase = '';
  return {
    update(phase, done, total, label) {
      if (!bar || phase !== barPhase) {
        bar?.stop();
        bar = progressBar(`${command} ${phase.padEnd(9)} |{bar}| {percentage}% | {label}`, stream);
        bar.start(total, 0, { label });
        barPhase = phase;
      }
      bar.setTotal(total);
      bar.update(done, { label });
    },
    stop() {
      bar?.stop();
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
