import { describe, expect, it } from 'vitest';
import {
  RUN_ID_PATTERN,
  newRunId,
  parseRunConfig,
  runConfigJsonSchema,
  runConfigToJson,
} from '../../lib/pipeline/run-config.ts';
import { isUserError } from '../../lib/errors.ts';

const minimal = {
  model: 's3://bucket/models/llama',
  adapters: { type: 'moka' },
  data: { train: 'data/train.jsonl' },
};

function problems(input: unknown): string[] {
  try {
    parseRunConfig(input);
  } catch (err) {
    expect(isUserError(err)).toBe(true);
    return (err as Error).message
      .split('\n')
      .slice(1)
      .map((l) => l.trim());
  }
  throw new Error('expected the config to be refused');
}

describe('run config', () => {
  it('fills defaults and turns a single adapter into one variant named after its type', () => {
    const c = parseRunConfig(minimal);
    expect(c.adapters).toHaveLength(1);
    expect(c.adapters[0]!.name).toBe('moka');
    expect(c.adapters[0]!.adapter.type).toBe('moka');
    expect(c.quantize).toEqual({
      format: 'nf4',
      blockSize: 64,
      doubleQuant: false,
      symmetric: false,
      quantizeLmHead: false,
    });
    expect(c.training.learningRate).toBe(2e-4);
    expect(c.compute.provider).toBe('cpu');
    expect(c.evals).toBeUndefined();
  });

  it('keeps named variants with initFrom, and round-trips through config.json', () => {
    const c = parseRunConfig({
      ...minimal,
      runId: 'paper-compare_1',
      adapters: [
        { name: 'moka', type: 'moka', plan: { budget: '5M' } },
        { name: 'lora-r8', type: 'lora', r: 8, initFrom: 's3://bucket/runs/old/variants/lora-r8/adapter' },
      ],
      evals: { tasks: ['arc_easy'], limit: 10 },
    });
    expect(c.adapters.map((v) => v.name)).toEqual(['moka', 'lora-r8']);
    expect(c.adapters[1]!.initFrom).toBe('s3://bucket/runs/old/variants/lora-r8/adapter');
    expect(c.adapters[0]!.adapter).toMatchObject({ type: 'moka', plan: { budget: 5_000_000 } });
    const again = parseRunConfig(JSON.parse(JSON.stringify(runConfigToJson(c))));
    expect(again).toEqual(c);
  });

  it('lists every problem with its JSON path, unknown keys included, in one error', () => {
    const list = problems({
      runId: '../../etc',
      model: 'http://example.com/model',
      quantize: { format: 'nf3' },
      adapters: [
        { name: 'a', type: 'kronecker' },
        { name: 'b', type: 'lora', r: 0, bogus: true },
        { name: 'b', type: 'dora' },
        { name: 'base', type: 'lora' },
      ],
      data: { train: 42 },
      training: { learningRate: 'fast' },
      compute: { provider: 'tpu' },
      extra: 1,
    });
    const expected = [
      /^runId: runId must be 1-80 letters/,
      /^model: unsupported URI scheme "http:\/\/"/,
      /^quantize\.format: format must be "nf4" or "int4"/,
      /^adapters\[0\]\.type: type must be one of moka, mokas, krona, lora, dora/,
      /^adapters\[1\]\.r: r must be at least 1/,
      /^adapters\[1\]: unknown field\(s\) "bogus"/,
      /^adapters\[3\]\.name: "base" is reserved/,
      /^data\.train: must be a URI or a list of URIs/,
      /^training\.learningRate: learningRate must be a number/,
      /^compute\.provider: provider must be one of cpu, cuda, webgpu, auto/,
      /^\(root\): unknown field\(s\) "extra"/,
    ];
    for (const re of expected)
      expect(
        list.some((l) => re.test(l)),
        `${re} in\n${list.join('\n')}`,
      ).toBe(true);
  });

  it('reports duplicate variant names and the adapter cross-field checks', () => {
    expect(
      problems({
        ...minimal,
        adapters: [
          { name: 'x', type: 'lora' },
          { name: 'x', type: 'dora' },
        ],
      }),
    ).toEqual(['adapters[1].name: duplicate variant name "x"']);
    const [p] = problems({ ...minimal, adapters: { type: 'moka', plan: {} } });
    expect(p).toMatch(/^adapters: plan needs a budget/);
  });

  it('accepts run ids S3 and Step Functions both accept, and refuses the others', () => {
    for (const ok of ['a', 'run-2026_01', 'x'.repeat(80)]) expect(RUN_ID_PATTERN.test(ok)).toBe(true);
    for (const bad of ['', 'x'.repeat(81), 'a/b', '..', 'a.b', 'has space', 'a:b', 'ü']) {
      expect(problems({ ...minimal, runId: bad })[0]).toMatch(/^runId: /);
    }
    const id = newRunId(new Date('2026-01-02T03:04:05Z'));
    expect(id).toMatch(/^run-20260102-030405-[0-9a-f]{6}$/);
    expect(RUN_ID_PATTERN.test(id)).toBe(true);
  });

  it('exports a JSON Schema with every section, defaults and the runId pattern', () => {
    const s = runConfigJsonSchema() as {
      properties: Record<string, Record<string, unknown>>;
      required: string[];
    };
    expect(Object.keys(s.properties)).toEqual([
      'runId',
      'model',
      'quantize',
      'adapters',
      'data',
      'training',
      'evals',
      'compute',
    ]);
    expect(s.required.sort()).toEqual(['adapters', 'data', 'model']);
    expect(s.properties.runId!.pattern).toBe(RUN_ID_PATTERN.source);
    expect(JSON.stringify(s.properties.training)).toContain('"default":42');
  });
});
