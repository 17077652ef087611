import { describe, expect, it } from 'vitest';
import { createPhaseProgress, createProgress, formatDuration } from '../../lib/train/progress.ts';

describe('progress', () => {
  it('formats the ETA compactly', () => {
    expect([5, 75, 3725, Number.NaN].map(formatDuration)).toEqual(['5s', '1m15s', '1h02m', '-']);
  });

  it('writes nothing in mode none, and step lines every logEvery steps (and at evaluations) in JSON mode', () => {
    const lines: string[] = [];
    const stream = { write: (s: string) => lines.push(s) > 0 } as unknown as NodeJS.WritableStream;
    const report = { totalSteps: 6, loss: 1, lr: 0.1, gradNorm: 1, tokensPerSec: 10, etaSec: 1 };
    const none = createProgress('none', stream, { logEvery: 1, startStep: 0, totalSteps: 6 });
    none.step({ ...report, step: 1 });
    none.event('train.end', {}, 'done');
    expect(lines).toEqual([]);
    const json = createProgress('json', stream, { logEvery: 4, startStep: 0, totalSteps: 6 });
    for (let step = 1; step <= 6; step++)
      json.step({ ...report, step, ...(step === 3 ? { evalLoss: 2 } : {}) });
    expect(lines.map((l) => (JSON.parse(l) as { step: number }).step)).toEqual([3, 4, 6]);
  });

  it('phase progress (quantize, dequantize): JSON lines off a terminal, at most one per percent per phase', () => {
    const lines: string[] = [];
    const stream = { write: (s: string) => lines.push(s) > 0 } as unknown as NodeJS.WritableStream;
    const p = createPhaseProgress('quantize', { stream });
    for (let done = 0; done <= 1000; done += 5) p.update('quantize', done, 1000, `t${done}`, { tensor: 'w' });
    p.update('write', 0, 10, 'model.safetensors');
    p.update('write', 10, 10, 'model.safetensors');
    p.stop();
    const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events.filter((e) => e.phase === 'quantize')).toHaveLength(101);
    expect(events[1]).toEqual({
      event: 'progress',
      command: 'quantize',
      phase: 'quantize',
      percent: 1,
      done: 10,
      total: 1000,
      label: 't10',
      tensor: 'w',
    });
    expect(events.slice(-2).map((e) => [e.phase, e.percent])).toEqual([
      ['write', 0],
      ['write', 100],
    ]);
    lines.length = 0;
    createPhaseProgress('dequantize', { stream, mode: 'none' }).update('write', 1, 2, 'x');
    expect(lines).toEqual([]);
  });
});
