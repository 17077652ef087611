/**
 * The training loop. One optimizer step = `gradientAccumulation` micro-batches (fewer at the end of an epoch; a
 * step never spans two epochs), each one ORT run of the step program returning a summed loss, its token count and
 * the gradients of the summed loss. The step's loss and gradients are the sums divided by the step's total token
 * count: the mean over every counted token of the accumulated batch, so k micro-batches of b sequences give what
 * one batch of k·b would (up to float rounding). Then global-norm clipping, the schedule's learning rate, AdamW
 * in TypeScript, a metrics line, evaluation and checkpoints as configured.
 *
 * Determinism: the data order is a pure function of (seed, epoch), the optimizer is plain float arithmetic in a
 * fixed order, and with a deterministic program (ORT CPU provider, intraOpThreads 1) the same seed gives
 * bit-identical parameters. A run resumed from a checkpoint restores parameters, AdamW moments, the step, the
 * data-loader position, early-stopping state and the metrics log, so it ends bit-identical to a run that was
 * never interrupted; only the timing fields of the metrics (TIMING_METRIC_KEYS) differ.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, isUserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { CLEANUP_SIGNALS, removeStaleTempFiles } from '../output-cleanup.ts';
import { fnv1a } from '../engine/random.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import { AdamW } from './adamw.ts';
import {
  CHECKPOINT_FORMAT_VERSION,
  CheckpointStore,
  METRICS_FILE,
  type CheckpointContents,
  type CheckpointHooks,
  type CheckpointInfo,
  type TrainerState,
} from './checkpoints.ts';
import { clipGradNorm } from './clip.ts';
import { createProgress, type ProgressMode, type ProgressReporter } from './progress.ts';
import { lrMultiplier, resolveWarmupSteps, type ScheduleSpec } from './schedules.ts';
import {
  checkStepResult,
  initialParams,
  validateTrainables,
  type StepProgram,
  type TokenBatch,
} from './step-program.ts';
import {
  collate,
  collatePacked,
  epochPlan,
  evalPlan,
  microBatchesInEpoch,
  type MicroBatchPlan,
  type OrderOptions,
  type TokenizedSample,
} from './tokenize-batch.ts';
import { NON_TRAJECTORY_FIELDS, gateLearningRate, type TrainConfig } from './train-config.ts';

/** Metrics fields that measure time: they differ between otherwise identical runs. */
export const TIMING_METRIC_KEYS = ['tokensPerSec', 'elapsedSec'] as const;

export interface TrainerOptions {
  program: StepProgram;
  train: readonly TokenizedSample[];
  /** The held-out split (may be empty: no evaluation). */
  eval?: readonly TokenizedSample[];
  config: TrainConfig;
  /** The run directory: metrics.jsonl and checkpoints/ go here. */
  outputDir: string;
  /** Token id used for padding (tokenizer pad, else EOS). */
  padId: number;
  /**
   * 'auto' (default): continue from the newest complete checkpoint when there is one, else start fresh.
   * true: there must be one. false: start fresh, refusing a directory that already holds checkpoints.
   */
  resume?: boolean | 'auto';
  /** More identity for the fingerprint: the adapter config, the base model, … (checkpoints of another refuse). */
  fingerprintExtra?: Record<string, unknown>;
  progress?: ProgressMode;
  /** Where progress goes (default process.stderr). */
  logStream?: NodeJS.WritableStream & { isTTY?: boolean };
  warn?: (message: string) => void;
  /** Stop cleanly on SIGTERM/SIGINT/SIGHUP (default true). */
  handleSignals?: boolean;
  /** Programmatic stop: behaves like SIGTERM. */
  stopSignal?: AbortSignal;
  checkpointHooks?: CheckpointHooks;
  /**
   * Called once the run directory has been checked (fingerprint, resume mode) and before anything in it is
   * written: the place for a caller to write its own files, so a refused run leaves the directory untouched.
   */
  onReady?: (info: { resumedFrom: number | null }) => Promise<void>;
}

export type StopReason = 'completed' | 'early-stopping' | 'signal';

export interface TrainResult {
  params: Map<string, Float32Array>;
  step: number;
  totalSteps: number;
  stoppedBy: StopReason;
  /** The signal that stopped the run, when stoppedBy is 'signal'. */
  signal?: string;
  resumedFrom: number | null;
  lastEvalLoss: number | null;
  bestEvalLoss: number | null;
  /** The newest checkpoint directory written by this call, if any. */
  checkpointDir: string | null;
  metricsPath: string;
}

/** JSON with object keys sorted at every depth: a stable text to hash. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

function sha256(parts: Iterable<string | Uint8Array>): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** Hash of the tokenized data: a checkpoint is only valid for the very samples it was trained on. */
export function dataFingerprint(
  train: readonly TokenizedSample[],
  evalSet: readonly TokenizedSample[],
): string {
  const h = createHash('sha256');
  for (const [tag, list] of [
    ['train', train],
    ['eval', evalSet],
  ] as const) {
    h.update(`${tag}:${list.length};`);
    for (const s of list) {
      h.update(new Uint8Array(s.ids.buffer, s.ids.byteOffset, s.ids.byteLength));
      h.update(s.targets);
      h.update(';');
    }
  }
  return h.digest('hex');
}

/** Up to `max` paths where two fingerprint inputs differ, as "path: a → b". */
export function describeDifferences(a: unknown, b: unknown, max = 6, path = ''): string[] {
  if (canonicalJson(a) === canonicalJson(b)) return [];
  const isObj = (x: unknown) => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (isObj(a) && isObj(b)) {
    // Objects of different types (e.g. adapter configs of another type) differ in every field: name the type only.
    const ta = (a as Record<string, unknown>).type;
    const tb = (b as Record<string, unknown>).type;
    if (ta !== undefined && tb !== undefined && canonicalJson(ta) !== canonicalJson(tb)) {
      return describeDifferences(ta, tb, max, path ? `${path}.type` : 'type');
    }
    const out: string[] = [];
    const keys = [...new Set([...Object.keys(a as object), ...Object.keys(b as object)])].sort();
    for (const k of keys) {
      if (out.length >= max) break;
      const sub = describeDifferences(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        max - out.length,
        path ? `${path}.${k}` : k,
      );
      out.push(...sub);
    }
    return out;
  }
  const show = (x: unknown) => {
    const s = JSON.stringify(x) ?? 'absent';
    return s.length > 60 ? `${s.slice(0, 57)}…` : s;
  };
  return [`${path || '(root)'}: ${show(a)} in the checkpoint, ${show(b)} now`];
}

/** What a fingerprint difference path stands for, in a user's words. */
const FINGERPRINT_PARTS: [prefix: string, name: string][] = [
  ['config', 'the training config'],
  ['trainables', "the adapter's trainable tensors"],
  ['data', 'the tokenized data'],
  ['extra.adapter', 'the adapter config'],
  ['extra.model', 'the base model'],
  ['extra', 'the run setup'],
];

/** "the training config and the tokenized data": the parts that `diffs` (describeDifferences lines) touch. */
function changedParts(diffs: readonly string[]): string {
  const names: string[] = [];
  for (const d of diffs) {
    const part = FINGERPRINT_PARTS.find(([p]) => d.startsWith(`${p}:`) || d.startsWith(`${p}.`));
    const name = part?.[1] ?? 'the run settings';
    if (!names.includes(name)) names.push(name);
  }
  return names.length === 0 ? 'the run settings' : names.join(' and ');
}

/** The data line of describeDifferences says which data changed rather than showing two hashes. */
function explainDataDifference(line: string): string {
  if (!line.startsWith('data:')) return line;
  return (
    'data: the tokens of the training/eval samples differ (changed data files, tokenizer, prompt or chat ' +
    "template, maxLength or truncation; a chat template that renders the date is pinned to the run's start)"
  );
}

/** Total optimizer steps of a run (see the module comment for epochs and accumulation). */
export function plannedSteps(lengths: readonly number[], config: TrainConfig, order: OrderOptions): number {
  if (config.maxSteps !== null) return config.maxSteps;
  let steps = 0;
  for (let e = 0; e < config.epochs; e++) {
    steps += Math.ceil(microBatchesInEpoch(lengths, e, order) / config.gradientAccumulation);
  }
  return steps;
}

function diverged(step: number, what: string): UserError {
  return new UserError(
    `training diverged at step ${step}: ${what}. Lower learningRate, set maxGradNorm (e.g. 1.0) or add warmup; ` +
      'the checkpoints written so far are intact',
  );
}

export async function train(opts: TrainerOptions): Promise<TrainResult> {
  const { program, config } = opts;
  const trainSet = opts.train;
  const evalSet = opts.eval ?? [];
  const specs = program.trainables;
  validateTrainables(specs);
  if (trainSet.length === 0) throw new UserError('the training split is empty; give a dataset with records');
  if (config.packing && !program.supportsPacking) {
    throw new UserError(
      'packing: true needs a step program with block-diagonal attention (positionIds/segmentIds), and this one ' +
        'has none; set packing: false (length-grouped batching wastes little padding)',
    );
  }
  if (config.earlyStoppingPatience !== null && evalSet.length === 0) {
    throw new UserError(
      'earlyStoppingPatience needs a held-out split; set evalFraction/evalRecords or give an eval file',
    );
  }
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const logStream = opts.logStream ?? process.stderr;

  const order: OrderOptions = {
    seed: config.seed,
    microBatchSize: config.microBatchSize,
    groupByLength: config.groupByLength,
    packing: config.packing,
    maxLength: config.maxLength,
  };
  const lengths = trainSet.map((s) => s.ids.length);
  const totalSteps = plannedSteps(lengths, config, order);
  if (config.warmupSteps > totalSteps) {
    throw new UserError(
      `warmupSteps ${config.warmupSteps} is more than the run's ${totalSteps} optimizer steps, so the learning rate ` +
        'would never reach its peak; lower warmupSteps, or use warmupRatio (a fraction of the steps)',
    );
  }
  const schedule: ScheduleSpec = {
    name: config.schedule,
    warmupSteps: resolveWarmupSteps(config.warmupSteps, config.warmupRatio, totalSteps),
    totalSteps,
    numCycles: config.cosineCycles,
  };
  const hasGate = specs.some((s) => s.group === 'gate');

  const trajectoryConfig: Record<string, unknown> = { ...config };
  for (const k of NON_TRAJECTORY_FIELDS) delete trajectoryConfig[k];
  const fingerprintInputs: Record<string, unknown> = {
    config: trajectoryConfig,
    trainables: specs.map((s) => ({
      name: s.name,
      shape: s.shape,
      group: s.group,
      init: sha256([new Uint8Array(s.init.buffer, s.init.byteOffset, s.init.byteLength)]),
    })),
    data: dataFingerprint(trainSet, evalSet),
    extra: opts.fingerprintExtra ?? {},
  };
  const fingerprint = sha256([canonicalJson(fingerprintInputs)]);

  const metricsPath = join(opts.outputDir, METRICS_FILE);
  const store = new CheckpointStore(join(opts.outputDir, 'checkpoints'), specs, opts.checkpointHooks);
  // Temporary files of a run that was killed (SIGKILL) before it could remove them, anywhere in the run directory.
  await removeStaleTempFiles(opts.outputDir, { recursive: true });

  // Refuse checkpoints of another run before touching anything, so they stay intact. The newest is checked
  // first: it is the one a resume would continue, so it is the one to name.
  const complete = (await store.list()).filter((c) => c.complete);
  for (const info of [...complete].reverse()) {
    const st = await store.readState(info);
    if (st.fingerprint !== fingerprint) {
      const diffs = describeDifferences(st.fingerprintInputs, fingerprintInputs).map(explainDataDifference);
      const what = changedParts(diffs);
      const newest =
        info === complete.at(-1) ? `the newest of ${complete.length} checkpoint(s)` : 'a checkpoint';
      throw new UserError(
        `${info.dir} (${newest}) belongs to a different run: ${what} changed:\n  ${diffs.join('\n  ')}\n` +
          `Use a new output directory, or restore ${what} to resume; nothing was changed in ${store.dir}.`,
      );
    }
  }
  const resume = opts.resume ?? 'auto';
  if (resume === false && complete.length > 0) {
    throw new UserError(
      `${store.dir} already holds ${complete.length} checkpoint(s) of this run (newest: step ${complete.at(-1)!.step}); ` +
        'pass --resume to continue it, or choose a new output directory',
    );
  }
  if (resume === true && complete.length === 0) {
    throw new UserError(`--resume: no complete checkpoint in ${store.dir}; start without --resume`);
  }

  // Created only now, so that a refused run (nothing to resume, another run's checkpoints) leaves nothing behind.
  await makeDirs(opts.outputDir);
  await opts.onReady?.({
    resumedFrom: complete.length > 0 && resume !== false ? complete.at(-1)!.step : null,
  });

  const params = initialParams(specs);
  const optimizer = new AdamW(
    specs,
    {
      default: { lr: config.learningRate, weightDecay: config.weightDecay },
      gate: { lr: gateLearningRate(config), weightDecay: config.gateWeightDecay },
    },
    { beta1: config.adamBeta1, beta2: config.adamBeta2, eps: config.adamEpsilon },
  );

  let step = 0;
  let epoch = 0;
  let microBatch = 0;
  let best: number | null = null;
  let evalsWithoutImprovement = 0;
  let tokensSeen = 0;
  let lastEvalLoss: number | null = null;
  let finished: TrainerState['finished'] = null;
  let metricsText = '';
  let metricsLines = 0;
  let elapsedBefore = 0;
  let resumedFrom: number | null = null;

  if (resume !== false && complete.length > 0) {
    let loaded: { info: CheckpointInfo; contents: CheckpointContents } | null = null;
    for (const info of [...complete].reverse()) {
      try {
        loaded = { info, contents: await store.load(info) };
        break;
      } catch (err) {
        if (!isUserError(err)) throw err;
        warn(`skipping checkpoint ${info.dir}: ${err.message}`);
      }
    }
    if (!loaded) {
      throw new UserError(
        `every complete checkpoint in ${store.dir} failed verification (see the warnings); move the directory ` +
          'away to start over',
      );
    }
    const { state, params: p, m, v } = loaded.contents;
    for (const [name, value] of p) params.get(name)!.set(value);
    optimizer.load({ step: state.optimizer.step, m: new Map(m), v: new Map(v) });
    step = state.step;
    epoch = state.dataLoader.epoch;
    microBatch = state.dataLoader.microBatch;
    best = state.earlyStopping.best;
    evalsWithoutImprovement = state.earlyStopping.evalsWithoutImprovement;
    tokensSeen = state.tokensSeen;
    lastEvalLoss = state.lastEvalLoss;
    finished = state.finished;
    metricsText = loaded.contents.metricsText;
    metricsLines = state.metrics.lines;
    elapsedBefore = state.elapsedSec ?? 0;
    resumedFrom = step;
    // The log continues from the checkpoint: lines a killed run wrote after it are replaced by the same lines.
    await writeFileAtomic(metricsPath, metricsText);
  } else {
    await writeFileAtomic(metricsPath, '');
  }

  const result = (stoppedBy: StopReason, checkpointDir: string | null, signal?: string): TrainResult => ({
    params,
    step,
    totalSteps,
    stoppedBy,
    ...(signal ? { signal } : {}),
    resumedFrom,
    lastEvalLoss,
    bestEvalLoss: best,
    checkpointDir,
    metricsPath,
  });
  if (finished) return result(finished, null);

  const progress: ProgressReporter = createProgress(opts.progress ?? 'auto', logStream, {
    logEvery: config.logEvery,
    startStep: step,
    totalSteps,
  });
  let stopSignal = null as string | null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopSignal) {
      // A second signal: give up on the clean stop and let the default action end the process.
      for (const s of CLEANUP_SIGNALS) process.removeListener(s, onSignal);
      process.kill(process.pid, sig);
      return;
    }
    stopSignal = sig;
    progress.event(
      'train.signal',
      { signal: sig, step },
      `received ${sig}: finishing step ${step + 1}, then writing a checkpoint (send it again to exit at once)`,
    );
  };
  const handleSignals = opts.handleSignals ?? true;
  if (handleSignals) {
    for (const s of CLEANUP_SIGNALS) process.on(s, onSignal);
  }
  const onAbort = () => {
    stopSignal ??= 'abort';
  };
  opts.stopSignal?.addEventListener('abort', onAbort);
  if (opts.stopSignal?.aborted) onAbort();

  let metricsFile: FileHandle | null = null;
  try {
    metricsFile = await open(metricsPath, 'a');
    const appendMetrics = async (line: Record<string, unknown>) => {
      const text = `${JSON.stringify(line)}\n`;
      metricsText += text;
      metricsLines++;
      await metricsFile!.appendFile(text);
    };

    const evalBatches = evalPlan(
      evalSet.map((s) => s.ids.length),
      config.evalBatchSize ?? config.microBatchSize,
    );
    const collateOpts = {
      padId: opts.padId,
      padToMultipleOf: config.padToMultipleOf,
      ...(program.maxSeqLen !== undefined ? { maxSeqLen: program.maxSeqLen } : {}),
    };
    const makeBatch = (plan: MicroBatchPlan, samples: readonly TokenizedSample[]): TokenBatch =>
      config.packing
        ? collatePacked(
            plan.map((row) => row.map((i) => samples[i]!)),
            collateOpts,
          )
        : collate(
            plan.map((row) => samples[row[0]!]!),
            collateOpts,
          );
    const evaluate = async (): Promise<number> => {
      let lossSum = 0;
      let tokens = 0;
      for (const plan of evalBatches) {
        const r = await program.loss(
          collate(
            plan.map((row) => evalSet[row[0]!]!),
            collateOpts,
          ),
          params,
        );
        lossSum += r.lossSum;
        tokens += r.tokens;
      }
      if (tokens === 0) throw new UserError('the held-out split has no counted tokens');
      return lossSum / tokens;
    };

    const startedAt = process.hrtime.bigint();
    const elapsed = () => elapsedBefore + Number(process.hrtime.bigint() - startedAt) / 1e9;
    let lastCheckpoint: string | null = null;
    let lastCheckpointStep = resumedFrom ?? -1;
    const saveCheckpoint = async () => {
      const opt = optimizer.state();
      const state: TrainerState = {
        formatVersion: CHECKPOINT_FORMAT_VERSION,
        step,
        totalSteps,
        dataLoader: { epoch, microBatch },
        scheduler: {
          name: schedule.name,
          warmupSteps: schedule.warmupSteps,
          totalSteps,
          numCycles: config.cosineCycles,
          lastStep: step,
        },
        optimizer: { step: opt.step },
        rng: { algorithm: 'mulberry32', seed: config.seed, epoch },
        earlyStopping: { best, evalsWithoutImprovement },
        finished,
        tokensSeen,
        lastEvalLoss,
        metrics: { lines: metricsLines, bytes: Buffer.byteLength(metricsText) },
        fingerprint,
        fingerprintInputs,
        elapsedSec: elapsed(),
      };
      lastCheckpoint = await store.save(
        { state, params, m: opt.m, v: opt.v, metricsText },
        config.keepCheckpoints,
      );
      lastCheckpointStep = step;
      progress.event('train.checkpoint', { step, dir: lastCheckpoint }, `checkpoint: ${lastCheckpoint}`);
    };

    progress.event(
      'train.start',
      {
        totalSteps,
        resumedFrom,
        trainSamples: trainSet.length,
        evalSamples: evalSet.length,
        effectiveBatch: config.microBatchSize * config.gradientAccumulation,
        warmupSteps: schedule.warmupSteps,
      },
      resumedFrom === null
        ? `training: ${totalSteps} steps, ${trainSet.length} samples (${evalSet.length} held out)`
        : `resuming at step ${resumedFrom} of ${totalSteps}`,
    );

    if (resumedFrom === null && evalSet.length > 0) {
      lastEvalLoss = await evaluate();
      best = lastEvalLoss;
      await appendMetrics({ step: 0, epoch: 0, evalLoss: lastEvalLoss });
      progress.event(
        'train.eval',
        { step: 0, evalLoss: lastEvalLoss },
        `step 0: eval loss ${lastEvalLoss.toFixed(4)}`,
      );
    }

    let plan = epochPlan(lengths, epoch, order);
    const grads = new Map(specs.map((s) => [s.name, new Float32Array(s.init.length)]));
    while (step < totalSteps && !stopSignal) {
      if (microBatch >= plan.length) {
        epoch++;
        microBatch = 0;
        plan = epochPlan(lengths, epoch, order);
      }
      const t0 = process.hrtime.bigint();
      const count = Math.min(config.gradientAccumulation, plan.length - microBatch);
      for (const g of grads.values()) g.fill(0);
      let lossSum = 0;
      let tokens = 0;
      let inputTokens = 0;
      for (let k = 0; k < count; k++) {
        const batch = makeBatch(plan[microBatch + k]!, trainSet);
        // Derived from the run seed and the position in the data, so a resumed run draws the same masks.
        batch.dropoutSeed = fnv1a(`${config.seed}:${epoch}:${microBatch + k}`);
        const r = await program.lossAndGrads(batch, params);
        checkStepResult(specs, r, `step ${step + 1}`);
        lossSum += r.lossSum;
        tokens += r.tokens;
        for (const m of batch.attentionMask) inputTokens += m;
        for (const [name, acc] of grads) {
          const g = r.grads.get(name)!;
          for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + g[i]!;
        }
      }
      microBatch += count;
      if (tokens === 0)
        throw new Error(`step ${step + 1}: no counted tokens (samples without targets were dropped)`);
      for (const acc of grads.values()) for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! / tokens;
      const loss = lossSum / tokens;
      if (!Number.isFinite(loss)) throw diverged(step + 1, `the loss is ${loss}`);
      const { norm } = clipGradNorm(grads.values(), config.maxGradNorm);
      if (!Number.isFinite(norm)) throw diverged(step + 1, `the gradient norm is ${norm}`);
      const mult = lrMultiplier(schedule, step);
      optimizer.update(params, grads, mult);
      step++;
      tokensSeen += tokens;
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;

      const line: Record<string, unknown> = {
        step,
        epoch: microBatch >= plan.length ? epoch + 1 : epoch + microBatch / plan.length,
        loss,
        lr: optimizer.groupLr('default', mult),
        ...(hasGate ? { gateLr: optimizer.groupLr('gate', mult) } : {}),
        gradNorm: norm,
        tokens,
        inputTokens,
      };
      for (const [k, val] of Object.entries(program.metrics?.(params) ?? {})) {
        if (k in line || k === 'evalLoss' || (TIMING_METRIC_KEYS as readonly string[]).includes(k)) {
          throw new Error(`the step program's metric "${k}" collides with a trainer metric; rename it`);
        }
        line[k] = val;
      }
      let evalLoss: number | undefined;
      if (
        evalSet.length > 0 &&
        ((config.evalEvery > 0 && step % config.evalEvery === 0) || step === totalSteps)
      ) {
        evalLoss = await evaluate();
        lastEvalLoss = evalLoss;
        line.evalLoss = evalLoss;
        if (best === null || evalLoss < best - config.earlyStoppingMinDelta) {
          best = evalLoss;
          evalsWithoutImprovement = 0;
        } else {
          evalsWithoutImprovement++;
        }
        if (
          config.earlyStoppingPatience !== null &&
          evalsWithoutImprovement >= config.earlyStoppingPatience
        ) {
          finished = 'early-stopping';
        }
      }
      if (step === totalSteps) finished ??= 'completed';
      line.tokensPerSec = inputTokens / Math.max(seconds, 1e-9);
      line.elapsedSec = elapsed();
      await appendMetrics(line);
      const secPerStep = (elapsed() - elapsedBefore) / (step - (resumedFrom ?? 0));
      progress.step({
        step,
        totalSteps,
        loss,
        lr: line.lr as number,
        gradNorm: norm,
        tokensPerSec: line.tokensPerSec as number,
        ...(evalLoss !== undefined ? { evalLoss } : {}),
        etaSec: secPerStep * (totalSteps - step),
      });
      if (finished === 'early-stopping') {
        progress.event(
          'train.early_stopping',
          { step, bestEvalLoss: best },
          `early stopping at step ${step}: no eval improvement in ${evalsWithoutImprovement} evaluations`,
        );
      }
      if (finished || stopSignal || step % config.checkpointEvery === 0) await saveCheckpoint();
      if (finished) break;
    }
    if (stopSignal && lastCheckpointStep !== step) await saveCheckpoint();
    const stoppedBy: StopReason = finished ?? (stopSignal ? 'signal' : 'completed');
    progress.event(
      'train.end',
      {
        stoppedBy,
        step,
        totalSteps,
        checkpoint: lastCheckpoint,
        ...(stopSignal ? { signal: stopSignal } : {}),
      },
      stoppedBy === 'signal'
        ? `stopped by ${stopSignal} at step ${step} of ${totalSteps}; checkpoint ${lastCheckpoint}. ` +
            'Run again with --resume to continue.'
        : `training ${stoppedBy === 'completed' ? 'complete' : 'stopped early'} at step ${step}`,
    );
    return result(stoppedBy, lastCheckpoint, stopSignal ?? undefined);
  } finally {
    progress.close();
    await metricsFile?.close();
    if (handleSignals) {
      for (const s of CLEANUP_SIGNALS) process.removeListener(s, onSignal);
    }
    opts.stopSignal?.removeEventListener('abort', onAbort);
  }
}
