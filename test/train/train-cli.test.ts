import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMoka as moka } from '../helpers/run-moka.ts';

const DATA = fileURLToPath(new URL('../../examples/data/tiny-instructions.jsonl', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'moka-train-cli-'));
const model = join(root, 'tiny');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const quick = [
  '--set',
  'promptTemplate=plain',
  '--set',
  'evalRecords=8',
  '--set',
  'evalEvery=2',
  '--threads',
  '1',
];

beforeAll(() => {
  const r = moka(['init-tiny', '--out', model]);
  expect(r.code).toBe(0);
});

describe('moka train', () => {
  it('prints a human summary on a terminal, JSON with --json', () => {
    const out = join(root, 'tty-run');
    const args = ['train', '--model', model, '--data', DATA, '--out', out, '--max-steps', '1', ...quick];
    // stdout as a terminal: a preloaded module marks it so, as a pseudo-terminal would.
    const tty = { NODE_OPTIONS: '--import=data:text/javascript,process.stdout.isTTY=true' };
    const human = moka([...args, '--progress', 'none'], { env: tty });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(
      /^training completed at step 1 of 1 \([\d,]+ trainable parameters\)\n {2}eval loss \d+\.\d{4} \(best \d+\.\d{4}\)\n {2}adapter: +.*tty-run\/adapter\n {2}checkpoint: +.*step-1\n {2}metrics: +.*metrics\.jsonl\n$/,
    );
    const json = moka([...args, '--progress', 'none', '--json'], { env: tty });
    expect(JSON.parse(json.stdout)).toMatchObject({ stoppedBy: 'completed', step: 1, resumedFrom: 1 });
  });

  it('trains, checkpoints and writes the adapter; prints a JSON summary', () => {
    const out = join(root, 'run');
    const r = moka([
      'train',
      '--model',
      model,
      '--data',
      DATA,
      '--out',
      out,
      '--adapter',
      'lora',
      '--max-steps',
      '4',
      ...quick,
      '--progress',
      'json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({
      stoppedBy: 'completed',
      step: 4,
      totalSteps: 4,
      adapterDir: join(out, 'adapter'),
    });
    expect(readdirSync(join(out, 'adapter')).sort()).toEqual([
      'adapter_config.json',
      'adapter_model.safetensors',
    ]);
    expect(readdirSync(out).sort()).toEqual([
      'adapter',
      'checkpoints',
      'metrics.jsonl',
      'train-config.json',
      'train-summary.json',
    ]);
    expect(r.stderr).toMatch(/^\{"event":"train.start"/);
    expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(5);
  });

  it('refuses another adapter type in the same run directory and keeps its checkpoints', () => {
    const out = join(root, 'run');
    const before = readdirSync(join(out, 'checkpoints'));
    const r = moka([
      'train',
      '--model',
      model,
      '--data',
      DATA,
      '--out',
      out,
      '--adapter',
      'moka',
      '--max-steps',
      '4',
      ...quick,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^moka: error: .*step-4 \(the newest of \d+ checkpoint\(s\)\) belongs to a different run/,
    );
    expect(r.stderr).toMatch(/extra\.adapter\.type: "lora" in the checkpoint, "moka" now/);
    expect(readdirSync(join(out, 'checkpoints'))).toEqual(before);
    const written = JSON.parse(readFileSync(join(out, 'train-config.json'), 'utf8')) as {
      adapter: { type: string };
    };
    expect(written.adapter.type).toBe('lora');
    const again = moka([
      'train',
      '--model',
      model,
      '--data',
      DATA,
      '--out',
      out,
      '--adapter',
      'lora',
      '--max-steps',
      '4',
      ...quick,
      '--no-resume',
    ]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already holds 1 checkpoint\(s\) of this run/);
  });

  it('reports bad data and bad settings in one clear message', () => {
    const bad = join(root, 'bad.jsonl');
    writeFileSync(bad, '{"instruction": "a", "output": ""}\n{"instruction": "b"}\nnot json\n');
    const r = moka(['train', '--model', model, '--data', bad, '--out', join(root, 'bad-run'), ...quick]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /moka: error: training dataset is empty: no usable records in .*bad\.jsonl; all 3 records are bad/,
    );
    expect(r.stderr).toMatch(/bad\.jsonl:2: missing field "output"/);
    expect(existsSync(join(root, 'bad-run', 'checkpoints'))).toBe(false);
    const s = moka([
      'train',
      '--model',
      model,
      '--data',
      DATA,
      '--out',
      join(root, 'x'),
      '--set',
      'learningRate=-1',
    ]);
    expect(s.code).toBe(1);
    // The flag that caused it is named, not a config file.
    expect(s.stderr).toBe('moka: error: --set learningRate=-1: learningRate must be positive\n');
    const missing = moka(['train', '--model', model, '--out', join(root, 'x')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/moka: error: give the training data with --data/);
  });
});
