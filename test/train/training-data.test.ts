import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { EXAMPLE_FILES } from '../../examples/data/generate.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';
import { prepareTrainingData } from '../../lib/train/training-data.ts';
import { tinyTokenizer } from './fixtures/setup.ts';

const examples = fileURLToPath(new URL('../../examples/data/', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'moka-data-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tok = tinyTokenizer();

describe('example datasets', () => {
  it('are exactly what examples/data/generate.ts produces', () => {
    for (const [name, make] of Object.entries(EXAMPLE_FILES)) {
      expect(readFileSync(join(examples, name), 'utf8'), name).toBe(make());
    }
  });

  it('load without bad records, in the formats they claim', async () => {
    const config = parseTrainConfig({ evalFraction: 0 });
    const data = await prepareTrainingData({
      train: examples,
      tokenizer: tok,
      config,
      displayRoot: examples,
    });
    expect(data.report).toMatchObject({
      trainFiles: ['commonsense-sample.json', 'tiny-chat.jsonl', 'tiny-instructions.jsonl'],
      formats: { commonsense: 24, chat: 24, alpaca: 200 },
      badRecords: 0,
      truncated: 0,
      trainSamples: 248,
      evalSamples: 0,
    });
  });
});

describe('preparing training data', () => {
  it('holds out evalRecords of the training file, or uses a separate eval file', async () => {
    const train = join(examples, 'tiny-instructions.jsonl');
    const held = await prepareTrainingData({
      train,
      tokenizer: tok,
      config: parseTrainConfig({ evalRecords: 20 }),
    });
    expect([held.report.trainSamples, held.report.evalSamples]).toEqual([180, 20]);
    const separate = await prepareTrainingData({
      train,
      eval: join(examples, 'commonsense-sample.json'),
      tokenizer: tok,
      config: parseTrainConfig({}),
    });
    expect([separate.report.trainSamples, separate.report.evalSamples]).toEqual([200, 24]);
    expect(separate.report.evalFiles).toEqual([join(examples, 'commonsense-sample.json')]);
  });

  it('counts and reports truncated and dropped samples with file and line', async () => {
    const path = join(root, 'lengths.jsonl');
    const long = 'word '.repeat(60);
    writeFileSync(
      path,
      [
        JSON.stringify({ instruction: 'short', output: 'ok' }),
        JSON.stringify({ instruction: 'long answer', output: long }),
        JSON.stringify({ instruction: long, output: 'ok' }),
      ].join('\n'),
    );
    const warnings: string[] = [];
    const warn = (m: string) => warnings.push(m);
    const base = { maxLength: 48, evalFraction: 0, promptTemplate: 'plain' as const };
    const cut = await prepareTrainingData({
      train: path,
      tokenizer: tok,
      config: parseTrainConfig(base),
      warn,
    });
    expect(cut.report).toMatchObject({
      trainSamples: 2,
      truncated: 1,
      droppedNoTargets: 1,
      droppedTooLong: 0,
    });
    expect(cut.train.every((s) => s.ids.length <= 48)).toBe(true);
    expect(warnings.join('\n')).toMatch(
      /1 samples are longer than maxLength 48 and were truncated .*lengths\.jsonl:2/,
    );
    expect(warnings.join('\n')).toMatch(
      /1 samples were left out because their prompt alone fills .*lengths\.jsonl:3/,
    );
    warnings.length = 0;
    const drop = await prepareTrainingData({
      train: path,
      tokenizer: tok,
      config: parseTrainConfig({ ...base, truncation: 'drop' }),
      warn,
    });
    expect(drop.report).toMatchObject({ trainSamples: 1, truncated: 0, droppedTooLong: 2 });
    expect(warnings[0]).toMatch(
      /2 samples are longer than maxLength 48 and were left out .*lengths\.jsonl:2 \(\d+ tokens\)/,
    );
    await expect(
      prepareTrainingData({
        train: path,
        tokenizer: tok,
        config: parseTrainConfig({ ...base, maxLength: 2 }),
        warn,
      }),
    ).rejects.toThrow(
      /the training split is empty after tokenization: of its 3 records, 0 are longer than maxLength 2 and 3 have no/,
    );
    // With a held-out split, the counts are the training split's own (not train + eval).
    const allLong = join(root, 'all-long.jsonl');
    writeFileSync(allLong, `${JSON.stringify({ instruction: 'long answer', output: long })}\n`.repeat(10));
    await expect(
      prepareTrainingData({
        train: allLong,
        tokenizer: tok,
        config: parseTrainConfig({ ...base, evalFraction: 0.05, evalRecords: 2, truncation: 'drop' }),
        warn,
      }),
    ).rejects.toThrow(/of its 8 records, 8 are longer than maxLength 48 and 0 have no response token/);
  });

  it('fails on malformed files above the bad-record threshold and skips a few below it', async () => {
    const path = join(root, 'bad.jsonl');
    const good = Array.from({ length: 99 }, () => JSON.stringify({ instruction: 'i', output: 'o' }));
    writeFileSync(path, [...good, '{"instruction": "i", "output": '].join('\n'));
    const warnings: string[] = [];
    const ok = await prepareTrainingData({
      train: path,
      tokenizer: tok,
      config: parseTrainConfig({ evalFraction: 0 }),
      warn: (m) => warnings.push(m),
    });
    expect(ok.report).toMatchObject({ badRecords: 1, trainSamples: 99 });
    expect(ok.report.badExamples[0]).toMatchObject({
      line: 100,
      reason: expect.stringMatching(/^invalid JSON/),
    });
    expect(warnings[0]).toMatch(/bad\.jsonl:100: invalid JSON/);
    await expect(
      prepareTrainingData({
        train: path,
        tokenizer: tok,
        config: parseTrainConfig({ evalFraction: 0, maxBadRecordFraction: 0 }),
        warn: () => {},
      }),
    ).rejects.toThrow(/1 of 100 records \(1\.00%\) are bad, above maxBadRecordFraction 0/);
  });
});
