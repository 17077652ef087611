/**
 * Learning-rate schedules, as transformers' `get_{constant,linear,cosine}_schedule_with_warmup` define them: a
 * multiplier of the base learning rate that depends only on the number of optimizer steps completed so far.
 *
 * As with torch's LambdaLR, the multiplier used by the k-th optimizer step (k = 1, 2, …) is `lrMultiplier(k − 1)`:
 * with warmup the very first step runs at learning rate 0 (it still updates AdamW's moments), exactly as a
 * transformers Trainer does. A schedule is stateless; its whole state is the step count, which is why resuming
 * it is exact.
 */
import { UserError } from '../errors.ts';

export const SCHEDULE_NAMES = ['constant', 'linear', 'cosine'] as const;
export type ScheduleName = (typeof SCHEDULE_NAMES)[number];

export interface ScheduleSpec {
  name: ScheduleName;
  warmupSteps: number;
  totalSteps: number;
  /** Cosine only: transformers' num_cycles, periods of the cosine over the decay (default 0.5: one half-cosine to 0). */
  numCycles?: number;
}

/** transformers' `get_warmup_steps`: explicit steps win; otherwise ⌈totalSteps · ratio⌉. */
export function resolveWarmupSteps(warmupSteps: number, warmupRatio: number, totalSteps: number): number {
  if (warmupSteps > 0) return warmupSteps;
  return Math.ceil(totalSteps * warmupRatio);
}

/** The multiplier of the base learning rate after `step` completed optimizer steps. */
export function lrMultiplier(spec: ScheduleSpec, step: number): number {
  const { warmupSteps: warmup, totalSteps: total } = spec;
  if (step < warmup) return step / Math.max(1, warmup);
  switch (spec.name) {
    case 'constant':
      return 1;
    case 'linear':
      return Math.max(0, (total - step) / Math.max(1, total - warmup));
    case 'cosine': {
      const progress = (step - warmup) / Math.max(1, total - warmup);
      const cycles = spec.numCycles ?? 0.5;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
    }
    default:
      throw new UserError(
        `unknown learning-rate schedule "${String(spec.name)}"; use one of ${SCHEDULE_NAMES.join(', ')}`,
      );
  }
}
