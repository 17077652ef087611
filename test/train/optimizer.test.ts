import { describe, expect, it } from 'vitest';
import { AdamW, adamwUpdate } from '../../lib/train/adamw.ts';
import { clipGradNorm, globalGradNorm } from '../../lib/train/clip.ts';
import { lrMultiplier, resolveWarmupSteps, type ScheduleSpec } from '../../lib/train/schedules.ts';
import type { TrainableSpec } from '../../lib/train/step-program.ts';

// Parameters and moments are float32, so comparisons against float64 hand computations allow float32 rounding:
// a relative error of a few ulps (2^-24 ≈ 6e-8) per operation; 1e-6 relative is a comfortable bound for 3 steps.
const closeF32 = (actual: number, expected: number) =>
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(expected)));

describe('AdamW (torch.optim.AdamW semantics)', () => {
  const hp = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };

  it('matches hand-computed values over three steps, with decoupled weight decay and bias correction', () => {
    // lr 0.1, weight decay 0.01. Step 1 by hand, param 0 (p = 1, g = 0.5):
    //   p ← 1 · (1 − 0.1 · 0.01) = 0.999;  m = 0.1 · 0.5 = 0.05;  v = 0.001 · 0.25 = 0.00025
    //   m̂ = 0.05 / 0.1 = 0.5;  v̂ = 0.00025 / 0.001 = 0.25;  p ← 0.999 − 0.1 · 0.5 / (√0.25 + 1e-8) = 0.899000002
    // param 1 (p = −2, g = 0.1): p ← −1.998 − 0.1 · 0.1 / (0.1 + 1e-8) = −2.09799999
    // Steps 2 and 3 follow the same formulas (grads below), evaluated in float64:
    const expected = [
      { p: [0.899000002, -2.097999990000001], m: [0.05, 0.01], v: [0.00025, 1.0e-5] },
      { p: [0.8714672987058463, -2.1876800978044098], m: [0.02, 0.039], v: [0.00031225, 9.999e-5] },
      { p: [0.8443938197403261, -2.2112827970224025], m: [0.023, 0.0151], v: [0.00031443775, 0.00013989001] },
    ];
    const grads = [
      [0.5, 0.1],
      [-0.25, 0.3],
      [0.05, -0.2],
    ];
    const p = Float32Array.of(1, -2);
    const m = new Float32Array(2);
    const v = new Float32Array(2);
    grads.forEach((g, k) => {
      adamwUpdate(p, Float32Array.from(g), m, v, k + 1, 0.1, 0.01, hp);
      for (let i = 0; i < 2; i++) {
        closeF32(p[i]!, expected[k]!.p[i]!);
        closeF32(m[i]!, expected[k]!.m[i]!);
        closeF32(v[i]!, expected[k]!.v[i]!);
      }
    });
  });

  it('a zero learning rate (first warmup step) moves no parameter but updates the moments', () => {
    const p = Float32Array.of(0.5);
    const m = new Float32Array(1);
    const v = new Float32Array(1);
    adamwUpdate(p, Float32Array.of(2), m, v, 1, 0, 0.1, hp);
    expect(p[0]).toBe(0.5);
    closeF32(m[0]!, 0.2);
    closeF32(v[0]!, 0.004);
  });

  it('gives the gate group its own learning rate and weight decay, scaled by the schedule', () => {
    const specs: TrainableSpec[] = [
      { name: 'a', shape: [1], init: Float32Array.of(1), group: 'default' },
      { name: 'g', shape: [1], init: Float32Array.of(1), group: 'gate' },
    ];
    const opt = new AdamW(
      specs,
      { default: { lr: 0.1, weightDecay: 0.5 }, gate: { lr: 0.01, weightDecay: 0 } },
      hp,
    );
    const params = new Map([
      ['a', Float32Array.of(1)],
      ['g', Float32Array.of(1)],
    ]);
    const grads = new Map([
      ['a', Float32Array.of(1)],
      ['g', Float32Array.of(1)],
    ]);
    opt.update(params, grads, 0.5);
    // Step 1 moves each parameter by lr · m̂/(√v̂ + ε) ≈ lr, after decay by (1 − lr · wd), lr = base · 0.5:
    //   a: 1 · (1 − 0.05 · 0.5) − 0.05 = 0.925;  g: 1 − 0.005 = 0.995
    closeF32(params.get('a')![0]!, 0.925);
    closeF32(params.get('g')![0]!, 0.995);
    expect(opt.groupLr('gate', 0.5)).toBe(0.005);
    expect(opt.step).toBe(1);
  });

  it('saves and restores its state exactly', () => {
    const specs: TrainableSpec[] = [
      { name: 'w', shape: [3], init: Float32Array.of(1, 2, 3), group: 'default' },
    ];
    const groups = { default: { lr: 0.01, weightDecay: 0.1 }, gate: { lr: 0.01, weightDecay: 0 } };
    const a = new AdamW(specs, groups, hp);
    const pa = new Map([['w', Float32Array.of(1, 2, 3)]]);
    const g1 = new Map([['w', Float32Array.of(0.1, -0.2, 0.3)]]);
    const g2 = new Map([['w', Float32Array.of(-0.3, 0.1, 0.05)]]);
    a.update(pa, g1, 1);
    const b = new AdamW(specs, groups, hp);
    const s = a.state();
    b.load({ step: s.step, m: new Map([['w', Float32Array.from(s.m.get('w')!)]]), v: new Map(s.v) });
    const pb = new Map([['w', Float32Array.from(pa.get('w')!)]]);
    a.update(pa, g2, 1);
    b.update(pb, g2, 1);
    expect([...pb.get('w')!]).toEqual([...pa.get('w')!]);
    expect(() =>
      b.load({ step: 1, m: new Map([['w', new Float32Array(2)]]), v: new Map([['w', new Float32Array(2)]]) }),
    ).toThrow(/wrong size/);
  });
});

describe('learning-rate schedules (transformers get_*_schedule_with_warmup)', () => {
  const at = (spec: ScheduleSpec, steps: number[]) => steps.map((s) => lrMultiplier(spec, s));

  it('linear: warmup 2, 10 steps', () => {
    // warmup: 0/2, 1/2; decay: (10 − s) / (10 − 2)
    expect(at({ name: 'linear', warmupSteps: 2, totalSteps: 10 }, [0, 1, 2, 3, 6, 9, 10, 11])).toEqual([
      0,
      0.5,
      1,
      7 / 8,
      4 / 8,
      1 / 8,
      0,
      0,
    ]);
  });

  it('cosine: warmup 2, 10 steps, half a cycle', () => {
    const spec: ScheduleSpec = { name: 'cosine', warmupSteps: 2, totalSteps: 10 };
    // progress p = (s − 2)/8; multiplier ½(1 + cos(π p)): s=4 → p=¼ → ½(1 + √2/2); s=6 → ½; s=10 → 0
    const got = at(spec, [1, 2, 4, 6, 8, 10]);
    const want = [0.5, 1, 0.5 * (1 + Math.SQRT1_2), 0.5, 0.5 * (1 - Math.SQRT1_2), 0];
    got.forEach((g, i) => expect(g).toBeCloseTo(want[i]!, 12));
    // num_cycles 1: a full period back up to 1 at the end.
    expect(lrMultiplier({ ...spec, numCycles: 1 }, 10)).toBeCloseTo(1, 12);
  });

  it('constant: warmup 4, then 1 forever', () => {
    expect(at({ name: 'constant', warmupSteps: 4, totalSteps: 10 }, [0, 1, 2, 3, 4, 10, 50])).toEqual([
      0, 0.25, 0.5, 0.75, 1, 1, 1,
    ]);
    expect(lrMultiplier({ name: 'constant', warmupSteps: 0, totalSteps: 10 }, 0)).toBe(1);
  });

  it('warmup steps win over a ratio; a ratio rounds up', () => {
    expect(resolveWarmupSteps(5, 0.5, 100)).toBe(5);
    expect(resolveWarmupSteps(0, 0.03, 1875)).toBe(57); // QLoRA: ⌈1875 · 0.03⌉ = ⌈56.25⌉
    expect(resolveWarmupSteps(0, 0, 100)).toBe(0);
  });
});

describe('global-norm clipping (torch.nn.utils.clip_grad_norm_)', () => {
  it('measures the norm over all tensors together and scales by maxNorm / (norm + 1e-6)', () => {
    const a = Float32Array.of(3, 4);
    const b = Float32Array.of(12);
    expect(globalGradNorm([a, b])).toBe(13);
    const { norm, scale } = clipGradNorm([a, b], 6.5);
    expect(norm).toBe(13);
    expect(scale).toBeCloseTo(6.5 / (13 + 1e-6), 15);
    closeF32(a[0]!, 1.5);
    closeF32(a[1]!, 2);
    closeF32(b[0]!, 6);
  });

  it('leaves gradients below the threshold, or with clipping disabled, untouched', () => {
    // 0.375 and 0.5 are exact in float32, so the norm is exactly 0.625.
    const g = Float32Array.of(0.375, 0.5);
    expect(clipGradNorm([g], 1)).toEqual({ norm: 0.625, scale: 1 });
    expect(clipGradNorm([g], 0)).toEqual({ norm: 0.625, scale: 1 });
    expect([...g]).toEqual([0.375, 0.5]);
  });
});
