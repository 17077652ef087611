/**
 * One training run of a LLaMA-family checkpoint with an adapter, end to end: open the frozen base (a float
 * checkpoint, or a 4-bit one whose projections stay 4-bit in the graph: QLoRA-style training), prepare the data
 * with its tokenizer, build the adapter and the step program, train (resuming when the run directory holds
 * checkpoints of the same run), and write the final adapter in the PEFT-style layout. `moka train` and the
 * pipeline's train stage both call this.
 *
 * Run directory: train-config.json (the effective training and adapter config, and the run's pinned chat-template
 * clock), metrics.jsonl, checkpoints/, adapter/ (when training ended rather than being stopped),
 * train-summary.json.
 *
 * A run's identity must not depend on the wall clock: a chat template that renders today's date (Llama 3.2's
 * `strftime_now`) would tokenize the data differently on the day a run is resumed. The clock such templates see is
 * pinned when the run starts, recorded as `chatClock` in train-config.json, and read back on every resume.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.ts';
import type { ProviderChoice } from '../engine/index.ts';
import type { AdapterConfig } from '../adapters/adapter-config.ts';
import { baseRowNorms } from '../adapters/adapted-model.ts';
import { createAdapterRuntime, type AdapterRuntime } from '../adapters/adapter-runtime.ts';
import { loadAdapter, saveAdapter } from '../adapters/adapter-files.ts';
import { resolveTargets } from '../adapters/targets.ts';
import { baseModelFingerprint } from '../model/base-identity.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import { parseWallClock, wallClockNow } from '../model/chat-template.ts';
import { openFrozenBase, type FrozenBase } from '../quant/frozen-base.ts';
import { createLlamaStepProgram } from './llama-step-program.ts';
import type { StepProgram } from './step-program.ts';
import { resolvePrecision, type TrainConfig } from './train-config.ts';
import { describeDifferences, train, type TrainResult, type TrainerOptions } from './trainer.ts';
import { prepareTrainingData, type DataReport } from './training-data.ts';

/** The trainer's own options that a run passes through unchanged (documented in trainer.ts). */
type PassedThrough =
  | 'resume'
  | 'progress'
  | 'logStream'
  | 'warn'
  | 'handleSignals'
  | 'stopSignal'
  | 'checkpointHooks';

export interface RunTrainingOptions extends Pick<TrainerOptions, PassedThrough> {
  /** Hugging Face checkpoint directory (float32/float16/bfloat16 safetensors + tokenizer). */
  modelDir: string;
  /** Training data: files or directories (JSON arrays or JSON Lines). */
  train: readonly string[];
  /** Held-out data; when absent, the training section's evalFraction/evalRecords are held out. */
  eval?: readonly string[];
  outputDir: string;
  training: TrainConfig;
  adapter: AdapterConfig;
  provider?: ProviderChoice;
  intraOpThreads?: number;
  /**
   * An adapter directory (saveAdapter layout) whose weights initialize training instead of the adapter's own
   * init: retraining from a previous adapter. It must have the same layout (type, targets, shapes).
   */
  initialAdapter?: string;
}

export interface RunTrainingResult extends TrainResult {
  /** Where the final adapter was written (null when the run was stopped before its end). */
  adapterDir: string | null;
  data: DataReport;
  trainableParameters: number;
}

/**
 * What identifies the base model in the run fingerprint: its config.json (quantization_config included), the
 * sizes of its weight files, and its content fingerprint (lib/model/base-identity.ts: a sample of its weights, so
 * a base with the same shapes but other weights is refused at resume); hashing gigabytes of weights at every
 * start would cost more than it protects.
 */
async function modelIdentity(base: FrozenBase, fingerprint: string): Promise<Record<string, unknown>> {
  const ckpt = base.checkpoint;
  const files: Record<string, number> = {};
  for (const f of ckpt.weightFiles()) files[f] = (await stat(join(ckpt.dir, f))).size;
  return { format: base.format, config: ckpt.config.raw, weightFiles: files, fingerprint };
}

const RUN_CONFIG_FILE = 'train-config.json';

/**
 * The chat-template clock of a run (see the module comment): the one train-config.json recorded when the run
 * directory holds one (a resume continues with it), else `now`'s local time.
 */
async function runChatClock(outputDir: string, now: Date = new Date()): Promise<string> {
  const path = join(outputDir, RUN_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return wallClockNow(now);
  }
  let recorded: unknown;
  try {
    recorded = (JSON.parse(text) as { chatClock?: unknown }).chatClock;
  } catch {
    throw new UserError(`${path}: not valid JSON; restore it, or use a new output directory`);
  }
  if (recorded === undefined) return wallClockNow(now);
  if (typeof recorded !== 'string') {
    throw new UserError(`${path}: "chatClock" must be a string "YYYY-MM-DDTHH:MM:SS"`);
  }
  parseWallClock(recorded, `${path}: chatClock`);
  return recorded;
}

/** What a run reports when it ends (printed by `moka train`, and in train-summary.json with the data report). */
export interface TrainingSummary {
  stoppedBy: TrainResult['stoppedBy'];
  step: number;
  totalSteps: number;
  resumedFrom: number | null;
  lastEvalLoss: number | null;
  bestEvalLoss: number | null;
  trainableParameters: number;
  adapterDir: string | null;
  checkpointDir: string | null;
  metrics: string;
}

export function trainingSummary(r: RunTrainingResult): TrainingSummary {
  return {
    stoppedBy: r.stoppedBy,
    step: r.step,
    totalSteps: r.totalSteps,
    resumedFrom: r.resumedFrom,
    lastEvalLoss: r.lastEvalLoss,
    bestEvalLoss: r.bestEvalLoss,
    trainableParameters: r.trainableParameters,
    adapterDir: r.adapterDir,
    checkpointDir: r.checkpointDir,
    metrics: r.metricsPath,
  };
}

/**
 * Sets the runtime's initial tensor values from a saved adapter with the same layout (adapter type, tensor names
 * and shapes; the saved config lists resolved component shapes, so layouts are compared, not configs). The values
 * enter the run fingerprint through the trainables' init hashes, so checkpoints of a run started otherwise are
 * refused.
 */
async function initializeFrom(runtime: AdapterRuntime, dir: string, adapter: AdapterConfig): Promise<void> {
  const saved = await loadAdapter(dir, runtime.llama);
  const layout = (r: AdapterRuntime) => [
    r.config.type,
    ...r.tensors.map((t) => `${t.name}[${t.shape.join('x')}]`),
  ];
  const differences = describeDifferences(layout(saved.runtime), layout(runtime));
  if (differences.length > 0) {
    throw new UserError(
      `${dir} holds a ${saved.runtime.config.type} adapter whose tensors differ from this run's ${adapter.type} ` +
        `adapter (${differences.join('; ')}); initializing from it needs the same adapter type, targets and shapes`,
    );
  }
  for (const t of runtime.tensors) t.init.set(saved.values.get(t.name)!);
}

/** `trainingSummary` for a person (what `moka train` prints on a terminal): a few lines, numbers rounded. */
export function formatTrainingSummary(s: TrainingSummary): string {
  const how = { completed: 'completed', 'early-stopping': 'stopped early', signal: 'interrupted' }[
    s.stoppedBy
  ];
  const resumed = s.resumedFrom === null ? '' : `, resumed from step ${s.resumedFrom}`;
  const loss = (x: number | null) => (x === null ? '-' : x.toFixed(4));
  const lines = [
    `training ${how ?? s.stoppedBy} at step ${s.step} of ${s.totalSteps}${resumed} ` +
      `(${s.trainableParameters.toLocaleString('en-US')} trainable parameters)`,
  ];
  if (s.lastEvalLoss !== null)
    lines.push(`  eval loss ${loss(s.lastEvalLoss)} (best ${loss(s.bestEvalLoss)})`);
  lines.push(
    s.adapterDir
      ? `  adapter:     ${s.adapterDir}`
      : '  adapter:     not written (run the same command again to resume)',
  );
  if (s.checkpointDir) lines.push(`  checkpoint:  ${s.checkpointDir}`);
  lines.push(`  metrics:     ${s.metrics}`);
  return `${lines.join('\n')}\n`;
}

export async function runTraining(opts: RunTrainingOptions): Promise<RunTrainingResult> {
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const provider = opts.provider ?? 'cpu';
  const training = { ...opts.training };
  if (provider === 'cpu') training.precision = resolvePrecision(training.precision, 'cpu', warn);
  const base = await openFrozenBase(opts.modelDir);
  let program: StepProgram | null = null;
  try {
    const config = base.config;
    if (training.maxLength > config.maxPositionEmbeddings) {
      throw new UserError(
        `maxLength ${training.maxLength} exceeds the model's max_position_embeddings ` +
          `${config.maxPositionEmbeddings}; lower maxLength`,
      );
    }
    const baseFingerprint = await baseModelFingerprint(base.checkpoint);
    const tokenizer = base.checkpoint.tokenizer();
    // Padding is masked out of attention and loss, so any id the embedding has will do: the tokenizer's pad
    // token unless it was added past the model's rows (a common `<pad>` at id vocab_size), else EOS.
    const padId =
      tokenizer.padId !== null && tokenizer.padId < config.vocabSize
        ? tokenizer.padId
        : (tokenizer.eosId ?? 0);
    const chatClock = await runChatClock(opts.outputDir);
    const data = await prepareTrainingData({
      train: opts.train,
      ...(opts.eval && opts.eval.length ? { eval: opts.eval } : {}),
      tokenizer,
      config: training,
      vocabSize: config.vocabSize,
      warn,
      chatClock,
    });
    // DoRA starts its magnitudes at the base weights' row norms, which the runtime takes when it is built (as
    // loadAdapterFor does for a saved adapter); the runtime plans the adapter once, for both.
    const norms =
      opts.adapter.type === 'dora'
        ? await baseRowNorms(
            base,
            resolveTargets(config, opts.adapter).map((t) => t.name),
          )
        : null;
    const runtime = createAdapterRuntime(config, opts.adapter, {
      seed: training.seed,
      ...(norms ? { baseRowNorms: (m: string) => norms.get(m)! } : {}),
    });
    if (opts.initialAdapter !== undefined) await initializeFrom(runtime, opts.initialAdapter, opts.adapter);
    const plan = runtime.plan;
    program = createLlamaStepProgram({
      config,
      weights: base.weights,
      ...(base.base ? { base: base.base } : {}),
      adapter: runtime,
      provider,
      precision: training.precision,
      lossScale: training.lossScale,
      ...(opts.intraOpThreads ? { intraOpThreads: opts.intraOpThreads } : {}),
    });
    const result = await train({
      program,
      train: data.train,
      eval: data.eval,
      config: training,
      outputDir: opts.outputDir,
      padId,
      resume: opts.resume ?? 'auto',
      fingerprintExtra: { adapter: opts.adapter, model: await modelIdentity(base, baseFingerprint) },
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(opts.logStream ? { logStream: opts.logStream } : {}),
      warn,
      ...(opts.handleSignals !== undefined ? { handleSignals: opts.handleSignals } : {}),
      ...(opts.stopSignal ? { stopSignal: opts.stopSignal } : {}),
      ...(opts.checkpointHooks ? { checkpointHooks: opts.checkpointHooks } : {}),
      onReady: () =>
        writeFileAtomic(
          join(opts.outputDir, RUN_CONFIG_FILE),
          `${JSON.stringify({ model: opts.modelDir, training, adapter: opts.adapter, chatClock }, null, 2)}\n`,
        ),
    });
    let adapterDir: string | null = null;
    if (result.stoppedBy !== 'signal') {
      adapterDir = join(opts.outputDir, 'adapter');
      await saveAdapter(adapterDir, runtime, result.params, { baseModel: opts.modelDir, baseFingerprint });
    }
    const final: RunTrainingResult = {
      ...result,
      adapterDir,
      data: data.report,
      trainableParameters: plan.totalParams,
    };
    const summary = { ...trainingSummary(final), data: data.report };
    await writeFileAtomic(
      join(opts.outputDir, 'train-summary.json'),
      `${JSON.stringify(summary, null, 2)}\n`,
    );
    return final;
  } finally {
    await program?.release();
    await base.close();
  }
}
