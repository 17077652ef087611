/**
 * AdamW on Float32Arrays, the algorithm of torch.optim.AdamW (amsgrad off, maximize off), per element:
 *
 *   t ← t + 1
 *   p ← p · (1 − lr · wd)                      decoupled weight decay, with the CURRENT (scheduled) lr
 *   m ← m + (g − m) · (1 − β1)                 torch's exp_avg.lerp_(grad, 1 − β1)
 *   v ← β2 · v + (1 − β2) · g²
 *   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)     bias correction; ε outside the square root
 *
 * Parameters, m and v are stored as float32 after each of those lines, as torch stores its float32 tensors; the
 * arithmetic inside a line is float64. The step count t is per optimizer (torch keeps one per parameter, but they
 * always advance together). Parameter groups ('default', 'gate') each have their own base learning rate and
 * weight decay; the schedule multiplies every group's base rate, as LambdaLR does.
 */
import { UserError } from '../errors.ts';
import type { ParamGroup, TrainableSpec } from './step-program.ts';

export interface AdamWHyperparameters {
  beta1: number;
  beta2: number;
  eps: number;
}

export interface GroupHyperparameters {
  /** Base learning rate (before the schedule's multiplier). */
  lr: number;
  weightDecay: number;
}

/** One AdamW update of one tensor; `step` is the new step count t (≥ 1). Exported for tests and benchmarks. */
export function adamwUpdate(
  param: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  step: number,
  lr: number,
  weightDecay: number,
  hp: AdamWHyperparameters,
): void {
  const { beta1, beta2, eps } = hp;
  const decay = 1 - lr * weightDecay;
  const stepSize = lr / (1 - beta1 ** step);
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const oneMinusBeta1 = 1 - beta1;
  const oneMinusBeta2 = 1 - beta2;
  const n = param.length;
  for (let i = 0; i < n; i++) {
    const g = grad[i]!;
    const p = Math.fround(param[i]! * decay);
    const mi = m[i]!;
    const mNew = Math.fround(mi + (g - mi) * oneMinusBeta1);
    const vNew = Math.fround(v[i]! * beta2 + oneMinusBeta2 * g * g);
    m[i] = mNew;
    v[i] = vNew;
    param[i] = p - stepSize * (mNew / (Math.sqrt(vNew) / bc2Sqrt + eps));
  }
}

export interface AdamWState {
  step: number;
  /** First moments (exp_avg) by parameter name. */
  m: Map<string, Float32Array>;
  /** Second moments (exp_avg_sq) by parameter name. */
  v: Map<string, Float32Array>;
}

export class AdamW {
  private stepCount = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();
  private readonly groups: ReadonlyMap<string, ParamGroup>;

  constructor(
    specs: readonly TrainableSpec[],
    readonly groupHyper: Readonly<Record<ParamGroup, GroupHyperparameters>>,
    readonly hp: AdamWHyperparameters,
  ) {
    if (!(hp.beta1 >= 0 && hp.beta1 < 1) || !(hp.beta2 >= 0 && hp.beta2 < 1)) {
      throw new UserError(`AdamW betas must be in [0, 1), got (${hp.beta1}, ${hp.beta2})`);
    }
    if (!(hp.eps > 0)) throw new UserError(`AdamW epsilon must be positive, got ${hp.eps}`);
    const groups = new Map<string, ParamGroup>();
    for (const s of specs) {
      groups.set(s.name, s.group);
      this.m.set(s.name, new Float32Array(s.init.length));
      this.v.set(s.name, new Float32Array(s.init.length));
    }
    this.groups = groups;
  }

  get step(): number {
    return this.stepCount;
  }

  /** The learning rate each group uses at a schedule multiplier. */
  groupLr(group: ParamGroup, multiplier: number): number {
    return this.groupHyper[group].lr * multiplier;
  }

  /** One update of every parameter from its (already normalised and clipped) gradient. */
  update(
    params: ReadonlyMap<string, Float32Array>,
    grads: ReadonlyMap<string, Float32Array>,
    lrMultiplier: number,
  ): void {
    this.stepCount++;
    for (const [name, group] of this.groups) {
      const p = params.get(name);
      const g = grads.get(name);
      if (!p || !g) throw new Error(`AdamW: no ${p ? 'gradient' : 'parameter'} for "${name}"`);
      const { lr, weightDecay } = this.groupHyper[group];
      adamwUpdate(
        p,
        g,
        this.m.get(name)!,
        this.v.get(name)!,
        this.stepCount,
        lr * lrMultiplier,
        weightDecay,
        this.hp,
      );
    }
  }

  /** The state (live arrays, not copies: write them out before the next update). */
  state(): AdamWState {
    return { step: this.stepCount, m: this.m, v: this.v };
  }

  /** Restores a saved state; every parameter must be present with its exact size. */
  load(state: AdamWState): void {
    if (!Number.isInteger(state.step) || state.step < 0) {
      throw new UserError(`optimizer state has step ${state.step}; the checkpoint is corrupt`);
    }
    for (const [name, m] of this.m) {
      const sm = state.m.get(name);
      const sv = state.v.get(name);
      if (!sm || !sv || sm.length !== m.length || sv.length !== m.length) {
        throw new UserError(
          `optimizer state for "${name}" is missing or has the wrong size; the checkpoint belongs to another adapter`,
        );
      }
      m.set(sm);
      this.v.get(name)!.set(sv);
    }
    this.stepCount = state.step;
  }
}
