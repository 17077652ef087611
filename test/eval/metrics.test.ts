// Metrics as lm-evaluation-harness defines them: acc, acc_norm by character length, stderrs, group averages, answer extraction.
import { describe, expect, it } from 'vitest';
import {
  argmax,
  extractAnswer,
  macroAverage,
  meanWithStderr,
  microAverage,
  multipleChoicePredictions,
  pythonLength,
} from '../../lib/eval/metrics.ts';

describe('multiple-choice predictions', () => {
  it('acc takes the largest log-likelihood; acc_norm divides by the character length of the choice', () => {
    // "a": −2 per 1 char = −2; "bbbb": −4 per 4 chars = −1. acc picks "a", acc_norm "bbbb".
    expect(multipleChoicePredictions([-2, -4], ['a', 'bbbb'])).toEqual({ acc: 0, accNorm: 1 });
  });

  it('counts code points as Python len() does, not UTF-16 units or bytes', () => {
    expect(pythonLength('😀😀')).toBe(2); // 4 UTF-16 units, 8 UTF-8 bytes
    expect(pythonLength('é')).toBe(1);
    // −3/2 = −1.5 vs −4/3 = −1.33: "abc" wins; with UTF-16 lengths (−3/4 = −0.75) the emoji would.
    expect(multipleChoicePredictions([-3, -4], ['😀😀', 'abc']).accNorm).toBe(1);
  });

  it('breaks ties toward the first choice, as numpy argmax does', () => {
    expect(argmax([-1, -1, -2])).toBe(0);
    expect(multipleChoicePredictions([-2, -2], ['x', 'y'])).toEqual({ acc: 0, accNorm: 0 });
  });
});

describe('standard errors', () => {
  it('mean_stderr: sample standard deviation (n − 1) over √n', () => {
    const m = meanWithStderr([1, 0, 1, 1]);
    expect(m.value).toBe(0.75);
    // var = (3·0.0625 + 0.5625)/3 = 0.25; se = 0.5/2
    expect(m.stderr).toBeCloseTo(0.25, 12);
    expect(meanWithStderr([1]).stderr).toBeNull();
  });

  it('micro average: weighted by size with lm-eval pooled_sample_stderr; macro: plain mean', () => {
    const a = meanWithStderr([1, 1, 0, 0]); // 0.5, se √(1/3)/2
    const b = meanWithStderr([1, 1, 1, 0, 0, 0, 0, 0]); // 0.375
    const micro = microAverage([
      { metric: a, size: 4 },
      { metric: b, size: 8 },
    ]);
    expect(micro.value).toBeCloseTo(5 / 12, 12);
    const pooledVar = (3 * a.stderr! ** 2 * 4 + 7 * b.stderr! ** 2 * 8) / (12 - 2);
    expect(micro.stderr).toBeCloseTo(Math.sqrt(pooledVar / 12), 12);
    const macro = macroAverage([a, b]);
    expect(macro.value).toBeCloseTo(0.4375, 12);
    expect(macro.stderr).toBeCloseTo(Math.sqrt(a.stderr! ** 2 + b.stderr! ** 2) / 2, 12);
  });
});

describe('answer extraction (LLM-Adapters)', () => {
  it('takes the first regex match of the trimmed output, before "### Response:"', () => {
    expect(
      extractAnswer(
        '  the correct answer is solution2, not solution1',
        'solution1|solution2',
        '### Response:',
      ),
    ).toBe('solution2');
    expect(extractAnswer('answer3\n### Response: answer1', 'answer1|answer2|answer3', '### Response:')).toBe(
      'answer3',
    );
    expect(extractAnswer('I do not know', 'true|false')).toBe('');
    expect(extractAnswer('True', 'true|false')).toBe(''); // case-sensitive, as re.findall
  });

  it('without a regex, the first line of the trimmed output', () => {
    expect(extractAnswer('\n  42 \nmore', null)).toBe('42');
  });
});
