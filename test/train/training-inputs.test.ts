// Assembling a run's settings from a --config file and flag overrides: unknown sections and fields at every level
// are errors listing the valid ones, and each problem names what caused it (the file, or the flag).
import { describe, expect, it } from 'vitest';
import { parseSetting, resolveTrainingInputs, type TrainingInputs } from '../../lib/train/training-inputs.ts';
import { fixtureRun } from './fixtures/setup.ts';

function message(inputs: TrainingInputs): string {
  try {
    resolveTrainingInputs(inputs);
  } catch (err) {
    expect((err as Error).name).toBe('UserError');
    return (err as Error).message;
  }
  throw new Error('expected a UserError');
}

const file = (json: unknown) => ({ path: 'train-tiny.json', json });
const flags = (...settings: string[]) => settings.map((s) => parseSetting(s));

describe('config files: unknown keys at every level', () => {
  it('a misspelt top-level section next to a real one is an error listing the sections', () => {
    expect(message({ file: file({ trainig: { maxSteps: 3 }, adapter: { type: 'lora' } }) })).toBe(
      'train-tiny.json: unknown section(s) "trainig"; valid sections: training, adapter',
    );
  });

  it('a misspelt section alone (read as a bare training section) names sections and fields', () => {
    expect(message({ file: file({ trainig: { maxSteps: 3 } }) })).toMatch(
      /^train-tiny\.json: unknown field\(s\) "trainig"; a config file holds the sections training, adapter, or the training fields seed, epochs, maxSteps/,
    );
  });

  it('unknown fields inside each section, nested ones included, list the valid fields', () => {
    expect(message({ file: file({ training: { maxStep: 3 } }) })).toMatch(
      /^train-tiny\.json training is invalid:\n {2}\(root\): unknown field\(s\) "maxStep"; known fields: seed, epochs/,
    );
    expect(message({ file: file({ adapter: { type: 'moka', plan: { budgt: '5M' } } }) })).toMatch(
      /^train-tiny\.json adapter: plan: unknown field "budgt"; valid fields: .*budget/,
    );
    expect(message({ file: file({ training: 5 }) })).toBe(
      'train-tiny.json: "training" must be an object of fields',
    );
  });
});

describe('flag overrides name the flag, not the config file', () => {
  it.each([
    [flags('learningRate=-1'), /^--set learningRate=-1: learningRate must be positive$/],
    [flags('foo=1'), /^--set foo=1: unknown training field "foo"; known fields: seed, epochs, maxSteps/],
    [flags('maxSteps=abc'), /^--set maxSteps=abc: maxSteps must be a number$/],
    [
      [{ flag: '--learning-rate -1', field: 'learningRate', value: -1 }],
      /^--learning-rate -1: learningRate must be positive$/,
    ],
    // A cross-field conflict is blamed on the override that introduced it, even with a valid file.
    [flags('warmupRatio=0.1'), /^--set warmupRatio=0\.1: warmupSteps: give warmupSteps \(5\) or warmupRatio/],
    [flags('maxSteps=2'), /^--set maxSteps=2: warmupSteps: warmupSteps 5 is more than maxSteps 2/],
  ])('%j', (overrides, expected) => {
    expect(message({ file: file({ training: { warmupSteps: 5 } }), overrides })).toMatch(expected);
  });

  it('the file is blamed for its own problems, before any flag is applied', () => {
    expect(message({ file: file({ learningRate: 'fast' }), overrides: flags('learningRate=0.1') })).toMatch(
      /^train-tiny\.json training is invalid:\n {2}learningRate: learningRate must be a number/,
    );
  });

  it('valid overrides apply in order over the file', () => {
    const { training, adapter } = resolveTrainingInputs({
      file: file({ training: { maxSteps: 9, learningRate: 0.5 }, adapter: { type: 'lora', r: 4 } }),
      overrides: flags('maxSteps=3', 'schedule=cosine', 'maxSteps=4'),
      adapterType: 'lora',
    });
    expect(training).toMatchObject({ maxSteps: 4, learningRate: 0.5, schedule: 'cosine' });
    expect(adapter).toMatchObject({ type: 'lora', r: 4 });
    expect(message({ file: file({ adapter: { type: 'lora' } }), adapterType: 'dora' })).toBe(
      '--adapter dora contradicts the "lora" adapter of train-tiny.json; give one of them',
    );
  });
});

describe('warmup longer than the run', () => {
  it('is refused when the step count comes from epochs too', async () => {
    await expect(
      fixtureRun({
        outputDir: '/nonexistent/never-created',
        config: { maxSteps: null, epochs: 1, warmupSteps: 1000 },
        handleSignals: false,
      }),
    ).rejects.toThrow(
      /^warmupSteps 1000 is more than the run's \d+ optimizer steps, so the learning rate would never/,
    );
  });
});
