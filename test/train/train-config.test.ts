import { describe, expect, it } from 'vitest';
import {
  TrainConfigSchema,
  defaultTrainConfig,
  gateLearningRate,
  parseTrainConfig,
  resolvePrecision,
  trainConfigJsonSchema,
} from '../../lib/train/train-config.ts';

describe('training config', () => {
  it('fills every field with its default from an empty section', () => {
    const c = defaultTrainConfig();
    expect(c).toMatchObject({
      seed: 42,
      epochs: 3,
      maxSteps: null,
      microBatchSize: 4,
      gradientAccumulation: 1,
      learningRate: 2e-4,
      gateLearningRate: null,
      schedule: 'linear',
      maxGradNorm: 1,
      maxLength: 256,
      truncation: 'truncate',
      trainOnPrompt: false,
      promptTemplate: 'auto',
      precision: 'fp32',
      keepCheckpoints: 3,
    });
    expect(parseTrainConfig(undefined)).toEqual(c);
    expect(gateLearningRate(c)).toBe(2e-4);
    expect(gateLearningRate({ ...c, gateLearningRate: 1e-3 })).toBe(1e-3);
  });

  it('reports every problem with its field and what is allowed', () => {
    let message = '';
    try {
      parseTrainConfig(
        { learningRate: -1, microBatchSize: 2.5, schedule: 'step', warmupSteps: 10, warmupRatio: 0.1, lr: 1 },
        'run.json training',
      );
    } catch (err) {
      expect((err as Error).name).toBe('UserError');
      message = (err as Error).message;
    }
    expect(message).toMatch(/^run\.json training is invalid:/);
    expect(message).toMatch(/learningRate: learningRate must be positive/);
    expect(message).toMatch(/microBatchSize: microBatchSize must be a whole number/);
    expect(message).toMatch(/schedule: schedule must be one of constant, linear, cosine/);
    expect(message).toMatch(/\(root\): unknown field\(s\) "lr"; known fields: seed, epochs/);
    // The cross-field check runs once the fields themselves are valid.
    expect(() => parseTrainConfig({ warmupSteps: 10, warmupRatio: 0.1 })).toThrow(
      /warmupSteps: give warmupSteps \(10\) or warmupRatio \(0\.1\), not both/,
    );
    expect(() => parseTrainConfig({ adamBeta2: 1 })).toThrow(/adamBeta2 must be below 1/);
  });

  it('exports a JSON Schema with a default and a description for every field', () => {
    const schema = trainConfigJsonSchema() as {
      properties: Record<string, { default?: unknown; description?: string }>;
    };
    const fields = Object.keys(TrainConfigSchema.shape);
    expect(Object.keys(schema.properties).sort()).toEqual([...fields].sort());
    for (const f of fields) {
      expect(schema.properties[f]!.description, f).toBeTruthy();
      expect(schema.properties[f]!.default, f).not.toBeUndefined();
    }
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema);
  });

  it('fp16 falls back to fp32 on the CPU provider with a warning, and stays fp16 on CUDA', () => {
    const warnings: string[] = [];
    expect(resolvePrecision('fp16', 'cpu', (m) => warnings.push(m))).toBe('fp32');
    expect(warnings[0]).toMatch(/not supported by the CPU provider; training in fp32/);
    expect(resolvePrecision('fp16', 'cuda', (m) => warnings.push(m))).toBe('fp16');
    expect(resolvePrecision('fp32', 'cpu', (m) => warnings.push(m))).toBe('fp32');
    expect(warnings).toHaveLength(1);
  });
});
