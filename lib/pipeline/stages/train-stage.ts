/**
 * The train stage of one variant: trains its adapter on the run's base model (the quantized cache entry, or the
 * source when quantize is false) and data, with the SageMaker-style checkpoint contract
 * (aws-pipeline-notes.md §6):
 *
 * - the store, not the local disk, is the truth: the local run folder starts empty and receives the newest
 *   complete checkpoint of `variants/<name>/checkpoints/` before training, so a retried job on another machine
 *   resumes where the last one stopped;
 * - every checkpoint is uploaded as soon as the trainer completes it (its `_COMPLETE` written last), and the store
 *   keeps the same checkpoints as the trainer (older ones deleted after the new one is complete);
 * - the adapter is uploaded at the end with its `_COMPLETE` marker; a variant whose adapter is complete is
 *   skipped.
 *
 * A stop request (SIGTERM, `stopSignal`) makes the trainer finish its step and checkpoint; the stage then fails
 * with StageInterruptedError so the job is retried and resumes.
 */
import { join } from 'node:path';
import { runTraining } from '../../train/run-training.ts';
import type { TrainConfig } from '../../train/train-config.ts';
import { findVariant } from '../run-config.ts';
import { COMPLETE_MARKER, getDir, isComplete, joinKey, putDir, type ArtifactStore } from '../store/index.ts';
import { StageContext, type StageOptions, type StageOutcome } from './stage-context.ts';
import { UserError } from '../../errors.ts';

export interface TrainStageOptions extends StageOptions {
  /** Test hook: called after a checkpoint is in the store (e.g. to simulate a kill right there). */
  afterCheckpointSync?: (step: number) => void | Promise<void>;
}

/** Raised when training stopped on a signal after checkpointing: retry the job to resume. */
export class StageInterruptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StageInterruptedError';
  }
}

const STEP_DIR = /^step-(\d+)$/;

/** Steps of the complete checkpoints under `prefix/` (step-N/_COMPLETE), ascending. */
export async function storedCheckpointSteps(store: ArtifactStore, prefix: string): Promise<number[]> {
  const steps = new Set<number>();
  for (const o of await store.list(prefix)) {
    const [dir, file] = o.key.slice(prefix.length + 1).split('/');
    const m = STEP_DIR.exec(dir ?? '');
    if (m && file === COMPLETE_MARKER) steps.add(Number(m[1]));
  }
  return [...steps].sort((a, b) => a - b);
}

const asList = (v: string | string[] | undefined): string[] =>
  v === undefined ? [] : Array.isArray(v) ? v : [v];

export async function trainStage(opts: TrainStageOptions): Promise<StageOutcome> {
  const ctx = await StageContext.open(opts);
  if (!opts.variant) throw new UserError('the train stage needs --variant NAME');
  const variant = findVariant(ctx.config, opts.variant);
  const name = variant.name;
  const { store, keys } = ctx;
  return ctx.run('train', name, async () => {
    if (await isComplete(store, keys.adapter(name))) {
      return { stage: 'train', variant: name, status: 'SKIPPED', detail: 'adapter complete' };
    }
    const model = await ctx.modelRecord();
    const modelDir = await ctx.fetch(model.quantized?.uri ?? model.source);
    const train = await Promise.all(asList(ctx.config.data.train).map((u) => ctx.fetch(u)));
    const validation = await Promise.all(asList(ctx.config.data.validation).map((u) => ctx.fetch(u)));
    const initialAdapter = variant.initFrom !== undefined ? await ctx.fetch(variant.initFrom) : undefined;

    // Restore the newest complete checkpoint from the store into a fresh local run folder.
    const out = await ctx.scratch('variants', name);
    const ckptPrefix = keys.checkpoints(name);
    const stored = await storedCheckpointSteps(store, ckptPrefix);
    const newest = stored.at(-1);
    if (newest !== undefined) {
      await getDir(store, joinKey(ckptPrefix, `step-${newest}`), join(out, 'checkpoints', `step-${newest}`));
      ctx.log(
        `[${ctx.runId}] train ${name}: restored checkpoint step ${newest} from ${store.uriOf(ckptPrefix)}`,
      );
    }

    const training: TrainConfig = {
      ...ctx.config.training,
      ...(ctx.config.data.format !== 'auto' ? { datasetFormat: ctx.config.data.format } : {}),
    };
    const result = await runTraining({
      modelDir,
      train,
      eval: validation,
      outputDir: out,
      training,
      adapter: variant.adapter,
      ...(initialAdapter ? { initialAdapter } : {}),
      provider: ctx.config.compute.provider,
      ...(ctx.config.compute.threads ? { intraOpThreads: ctx.config.compute.threads } : {}),
      progress: opts.progress ?? 'auto',
      resume: 'auto',
      // The CLI process handles signals through stopSignal; several stages may share one process locally.
      handleSignals: false,
      ...(opts.stopSignal ? { stopSignal: opts.stopSignal } : {}),
      checkpointHooks: {
        afterCheckpoint: async (step, dir, kept) => {
          await putDir(store, dir, joinKey(ckptPrefix, `step-${step}`));
          for (const s of await storedCheckpointSteps(store, ckptPrefix)) {
            if (!kept.includes(s)) await store.delete(joinKey(ckptPrefix, `step-${s}`));
          }
          await opts.afterCheckpointSync?.(step);
        },
      },
    });
    // The trainer's log, config and summary, then the adapter (marker last: what makes the variant done).
    for (const f of ['metrics.jsonl', 'train-config.json', 'train-summary.json']) {
      await store.putFile(joinKey(keys.variant(name), f), join(out, f));
    }
    if (result.stoppedBy === 'signal' || !result.adapterDir) {
      throw new StageInterruptedError(
        `training of ${name} stopped at step ${result.step} of ${result.totalSteps} (checkpoint in ${store.uriOf(ckptPrefix)}); run the stage again to resume`,
      );
    }
    await putDir(store, result.adapterDir, keys.adapter(name));
    return {
      stage: 'train',
      variant: name,
      status: 'SUCCEEDED',
      detail:
        result.resumedFrom !== null ? `resumed from step ${result.resumedFrom}` : `${result.step} steps`,
      result: {
        step: result.step,
        totalSteps: result.totalSteps,
        resumedFrom: result.resumedFrom,
        stoppedBy: result.stoppedBy,
        lastEvalLoss: result.lastEvalLoss,
        trainableParameters: result.trainableParameters,
        adapterUri: store.uriOf(keys.adapter(name)),
      },
    };
  });
}
