// The parsing every command shares (bin/commands/cli-helpers.ts), and commands that use it as a user sees them.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  collect,
  parseInteger,
  parseNumber,
  parsePositiveNumber,
  parseProvider,
  parseStorageDtype,
  readJsonFile,
} from '../../bin/commands/cli-helpers.ts';
import { UserError } from '../../lib/errors.ts';
import { runMoka } from '../helpers/run-moka.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-cli-helpers-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('flag parsing', () => {
  it('integers are plain decimal digits: no exponent, hex, sign or fraction', () => {
    expect(parseInteger('12', '--n', 1)).toBe(12);
    expect(parseInteger(' 0 ', '--seed', 0)).toBe(0);
    for (const bad of ['1e3', '0x10', '-1', '1.5', '', 'ten', '99999999999999999999']) {
      expect(() => parseInteger(bad, '--n', 0), bad).toThrow(UserError);
    }
    expect(() => parseInteger('0', '--count', 1)).toThrow('--count must be an integer >= 1, got "0"');
  });

  it('numbers, positive numbers, providers and storage dtypes', () => {
    expect(parseNumber('1e-3', '--lr')).toBe(0.001);
    expect(() => parseNumber(' ', '--lr')).toThrow(/--lr must be a number/);
    expect(() => parseNumber('Infinity', '--lr')).toThrow(UserError);
    expect(parsePositiveNumber('0.5', '--x')).toBe(0.5);
    expect(() => parsePositiveNumber('0', '--x')).toThrow(/--x must be a positive number/);
    expect(parseProvider('webgpu')).toBe('webgpu');
    expect(() => parseProvider('tpu')).toThrow(
      '--provider must be one of cpu, cuda, webgpu, auto, got "tpu"',
    );
    expect(['f32', 'fp16', 'BF16', 'float32', 'half'].map((d) => parseStorageDtype(d))).toEqual([
      'F32',
      'F16',
      'BF16',
      'F32',
      'F16',
    ]);
    expect(() => parseStorageDtype('f64')).toThrow('--dtype must be f32, f16 or bf16, got "f64"');
    expect(() => parseStorageDtype('int4')).toThrow(UserError);
  });

  it('collects repeatable options', () => {
    expect(collect('b', collect('a', []))).toEqual(['a', 'b']);
  });
});

describe('readJsonFile', () => {
  it('refuses a file that is not UTF-8 instead of reading U+FFFD into a value', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-latin1-'));
    const path = join(dir, 'latin1.json');
    writeFileSync(path, Buffer.from('{"promptTemplate": "caf\xe9"}', 'latin1'));
    expect(() => readJsonFile(path, '--config')).toThrow(
      /^--config .*latin1\.json is not UTF-8 text; save it as UTF-8$/,
    );
    rmSync(dir, { recursive: true, force: true });
  });

  it('parses a file, and says what is wrong with a missing, unreadable or invalid one', () => {
    const good = join(root, 'good.json');
    writeFileSync(good, '{"a": 1}');
    expect(readJsonFile(good, '--config')).toEqual({ a: 1 });
    expect(() => readJsonFile(join(root, 'nope.json'), '--config')).toThrow(
      `--config ${join(root, 'nope.json')}: no such file; check the path`,
    );
    expect(() => readJsonFile(root, '--config')).toThrow(/is a directory; give a JSON file/);
    const bad = join(root, 'bad.json');
    writeFileSync(bad, '{"a": ');
    expect(() => readJsonFile(bad, 'adapter config')).toThrow(
      new RegExp(`^adapter config ${bad} is not valid JSON \\(.*\\); fix the file$`),
    );
  });
});

describe('commands use the shared parsers', () => {
  it('plan refuses --count 0x10, and merge refuses --dtype f64, in one line', () => {
    const plan = runMoka(['plan', '--config', join(root, 'nope.json'), '--count', '0x10']);
    expect(plan.code).toBe(1);
    expect(plan.stderr.trim()).toMatch(
      /^moka: error: model config .*nope\.json: no such file; check the path$/,
    );
    const config = join(root, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        architectures: ['LlamaForCausalLM'],
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 512,
        max_position_embeddings: 128,
        rms_norm_eps: 1e-5,
      }),
    );
    const count = runMoka(['plan', '--config', config, '--count', '0x10']);
    expect(count.code).toBe(1);
    expect(count.stderr.trim()).toBe('moka: error: --count must be an integer >= 1, got "0x10"');
    const merge = runMoka([
      'merge',
      '--model',
      root,
      '--adapter',
      root,
      '--out',
      join(root, 'o'),
      '--dtype',
      'f64',
    ]);
    expect(merge.code).toBe(1);
    expect(merge.stderr.trim()).toBe('moka: error: --dtype must be f32, f16 or bf16, got "f64"');
  });
});
