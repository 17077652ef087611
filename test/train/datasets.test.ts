import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkBadRecords,
  detectFormat,
  readDatasetRecords,
  splitHeldOut,
  splitJsonArray,
} from '../../lib/train/datasets.ts';
import { PROMPT_TEMPLATES, renderPrompt } from '../../lib/train/prompt-templates.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-datasets-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let fileNo = 0;
function write(name: string, text: string): string {
  const dir = join(root, `case-${fileNo++}`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('reading dataset files', () => {
  it('counts records with bytes that are not UTF-8 as bad, with their line; real U+FFFD text is kept', async () => {
    const rec = (output: string) => Buffer.from(`${JSON.stringify({ instruction: 'i', output })}\n`);
    const dir = join(root, `case-${fileNo++}`);
    mkdirSync(dir);
    const lines = join(dir, 'data.jsonl');
    // Line 2 holds a lone 0xFF byte (Latin-1 "ÿ" saved without converting); line 3 a properly encoded U+FFFD.
    writeFileSync(
      lines,
      Buffer.concat([
        rec('fine'),
        Buffer.from('{"instruction": "i", "output": "caf\xe9 \xff"}\n', 'latin1'),
        rec('\ufffd ok'),
      ]),
    );
    const a = await readDatasetRecords(lines);
    expect(a.records.map((r) => (r as { output: string }).output)).toEqual(['fine', '\ufffd ok']);
    expect(a.bad).toEqual([
      {
        file: lines,
        line: 2,
        reason: 'invalid UTF-8 on line 2 (bytes that are not UTF-8 text); save the file as UTF-8',
      },
    ]);
    // Further variant: a pretty-printed JSON array, the bad byte on the third line of a record starting at line 5.
    const array = join(dir, 'data.json');
    writeFileSync(
      array,
      Buffer.concat([
        Buffer.from(
          '[\n  {"instruction": "i",\n   "output": "o"},\n\n  {"instruction": "i",\n   "input": "x",\n   "output": "',
        ),
        Buffer.from([0xc3, 0x28]), // a 2-byte lead followed by a non-continuation byte
        Buffer.from('"}\n]\n'),
      ]),
    );
    const b = await readDatasetRecords(array);
    expect(b.records).toHaveLength(1);
    expect(b.bad).toEqual([
      {
        file: array,
        line: 5,
        reason: 'invalid UTF-8 on line 7 (bytes that are not UTF-8 text); save the file as UTF-8',
      },
    ]);
  });

  it('reads a JSON array and reports each bad element with its line', async () => {
    const path = write(
      'data.json',
      [
        '[',
        '  {"instruction": "a", "output": "b"},',
        '  {"instruction": 5, "output": "b"},',
        '  {"instruction": "c", "output": "  "},',
        '  {"instruction": "d" "output": "e"},',
        '  "just a string",',
        '  {"instruction": "e", "input": "x, with a comma and a ] bracket", "output": "f"},',
        '  {"text": "plain \\"quoted\\" text"}',
        ']',
        '',
      ].join('\n'),
    );
    const r = await readDatasetRecords(path);
    expect(r.records.map((x) => x.format)).toEqual(['alpaca', 'alpaca', 'text']);
    expect(r.records[1]).toMatchObject({ input: 'x, with a comma and a ] bracket', source: { line: 7 } });
    expect(r.bad.map((b) => [b.line, b.reason])).toEqual([
      [3, 'field "instruction" must be a string, got number'],
      [4, 'empty response ("output" is blank)'],
      [5, expect.stringMatching(/^invalid JSON/)],
      [6, 'expected a JSON object, got string'],
    ]);
    expect(r.bad[0]!.file).toBe(path);
  });

  it('reads JSON Lines (whatever the extension), skipping blank lines and counting lines from 1', async () => {
    const path = write(
      'data.json',
      '{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "output": \n{"messages": []}\n{"text": "t"}\n',
    );
    const r = await readDatasetRecords(path);
    expect(r.records.map((x) => [x.format, x.source.line])).toEqual([
      ['alpaca', 1],
      ['text', 5],
    ]);
    expect(r.bad.map((b) => b.line)).toEqual([3, 4]);
    expect(r.bad[1]!.reason).toMatch(/"messages" must be a non-empty list/);
  });

  it('expands directories recursively in name order, skipping hidden and other files', async () => {
    const dir = join(root, 'tree');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    mkdirSync(join(dir, '.cache'), { recursive: true });
    writeFileSync(join(dir, 'b.jsonl'), '{"text": "second"}\n');
    writeFileSync(join(dir, 'a.json'), '[{"text": "first"}]');
    writeFileSync(join(dir, 'sub', 'c.JSONL'), '{"text": "third"}\n');
    writeFileSync(join(dir, 'notes.txt'), 'not data');
    writeFileSync(join(dir, '.cache', 'd.jsonl'), '{"text": "hidden"}\n');
    const r = await readDatasetRecords(dir, { displayRoot: dir });
    expect(r.files).toEqual(['a.json', 'b.jsonl', join('sub', 'c.JSONL')]);
    expect(r.records.map((x) => (x.format === 'text' ? x.text : ''))).toEqual(['first', 'second', 'third']);
  });

  it('detects formats per record and honours an explicit format', async () => {
    expect(detectFormat({ instruction: 'i', output: 'o' })).toBe('alpaca');
    expect(detectFormat({ instruction: 'i', input: '', output: 'o', answer: 'a' })).toBe('commonsense');
    expect(detectFormat({ messages: [] })).toBe('chat');
    expect(detectFormat({ text: 't' })).toBe('text');
    expect(detectFormat({ prompt: 'p', completion: 'c' })).toBeNull();
    const path = write(
      'mixed.jsonl',
      '{"instruction": "i", "output": "o"}\n{"text": "t"}\n{"prompt": "p"}\n',
    );
    const auto = await readDatasetRecords(path);
    expect(auto.records).toHaveLength(2);
    expect(auto.bad[0]!.reason).toMatch(/no known fields \(has prompt\)/);
    const forced = await readDatasetRecords(path, { format: 'text' });
    expect(forced.records).toHaveLength(1);
    expect(forced.bad.map((b) => [b.line, b.reason])).toEqual([
      [1, 'missing field "text"'],
      [3, 'missing field "text"'],
    ]);
  });

  it('validates chat records: roles, contents and an assistant turn', async () => {
    const path = write(
      'chat.jsonl',
      [
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
        '{"messages": [{"role": "user", "content": "hi"}]}',
        '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "yo"}]}',
        '{"messages": [{"content": "x"}]}',
      ].join('\n'),
    );
    const r = await readDatasetRecords(path);
    expect(r.records).toHaveLength(1);
    expect(r.bad.map((b) => b.reason)).toEqual([
      'no assistant message with content (nothing to train on)',
      'messages[0].content must be a string, got number',
      'messages[0].role must be a non-empty string',
    ]);
  });

  it('reports a truncated JSON array at its last element instead of failing the file', async () => {
    const path = write('cut.json', '[\n{"text": "a"},\n{"text": "b"},\n{"text": "c');
    const r = await readDatasetRecords(path);
    expect(r.records).toHaveLength(2);
    expect(r.bad).toEqual([
      { file: path, line: 4, reason: 'the JSON array is not closed (is the file truncated?)' },
    ]);
    expect(splitJsonArray('[1, , 2]').map((c) => c.error ?? c.text)).toEqual([
      '1',
      'empty element (two commas in a row)',
      '2',
    ]);
  });

  it('refuses a pretty-printed single object, missing paths and empty directories with a clear message', async () => {
    const obj = write('one.json', '{\n  "instruction": "a",\n  "output": "b"\n}\n');
    await expect(readDatasetRecords(obj)).rejects.toThrow(/holds one JSON object; expected a JSON array/);
    await expect(readDatasetRecords(join(root, 'nope.jsonl'))).rejects.toThrow(/no such file or directory/);
    const empty = join(root, 'empty-dir');
    mkdirSync(empty);
    await expect(readDatasetRecords(empty)).rejects.toThrow(/holds no \.json or \.jsonl files/);
  });
});

describe('the bad-record policy', () => {
  const lines = (good: number, bad: number) =>
    [...Array(good).fill('{"text": "ok"}'), ...Array(bad).fill('{"text": 1}')].join('\n');

  it('skips bad records up to maxBadRecordFraction with a warning listing them', async () => {
    const r = await readDatasetRecords(write('few.jsonl', lines(99, 1)));
    const warnings: string[] = [];
    checkBadRecords(r, 0.01, 'training dataset', (m) => warnings.push(m));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/skipping 1 of 100 records \(1\.00%\)/);
    expect(warnings[0]).toMatch(/few\.jsonl:100: field "text" must be a string, got number/);
  });

  it('fails above the threshold, listing the first bad records and how to proceed', async () => {
    const r = await readDatasetRecords(write('many.jsonl', lines(90, 10)));
    let message = '';
    try {
      checkBadRecords(r, 0.05, 'training dataset', () => {});
    } catch (err) {
      message = (err as Error).message;
      expect((err as Error).name).toBe('UserError');
    }
    expect(message).toMatch(/10 of 100 records \(10\.00%\) are bad, above maxBadRecordFraction 0\.05/);
    expect(message).toMatch(/many\.jsonl:91:/);
    expect(message).toMatch(/… and 5 more/);
  });

  it('an empty dataset is a UserError, whether the file is empty or every record is bad', async () => {
    const empty = await readDatasetRecords(write('empty.jsonl', ''));
    expect(() => checkBadRecords(empty, 1, 'training dataset', () => {})).toThrow(
      /training dataset is empty/,
    );
    const allBad = await readDatasetRecords(write('bad.jsonl', lines(0, 3)));
    expect(() => checkBadRecords(allBad, 1, 'training dataset', () => {})).toThrow(/all 3 records are bad/);
  });
});

describe('held-out split', () => {
  const items = Array.from({ length: 200 }, (_, i) => i);

  it('is seeded: the same seed holds out the same records, another seed others', () => {
    const a = splitHeldOut(items, { fraction: 0.05, count: null, seed: 1 });
    const b = splitHeldOut(items, { fraction: 0.05, count: null, seed: 1 });
    const c = splitHeldOut(items, { fraction: 0.05, count: null, seed: 2 });
    expect(a.eval).toHaveLength(10);
    expect(a.train).toHaveLength(190);
    expect(a).toEqual(b);
    expect(c.eval).not.toEqual(a.eval);
    expect([...a.train, ...a.eval].sort((x, y) => x - y)).toEqual(items);
  });

  it('takes an explicit count, at least one record for a small positive fraction, none for 0', () => {
    expect(splitHeldOut(items, { fraction: 0.05, count: 7, seed: 1 }).eval).toHaveLength(7);
    expect(splitHeldOut(items.slice(0, 5), { fraction: 0.01, count: null, seed: 1 }).eval).toHaveLength(1);
    expect(splitHeldOut(items, { fraction: 0, count: null, seed: 1 }).eval).toHaveLength(0);
    expect(() => splitHeldOut(items.slice(0, 3), { fraction: 0, count: 3, seed: 1 })).toThrow(/leave none/);
  });
});

describe('prompt templates', () => {
  it('alpaca is Stanford Alpaca train.py PROMPT_DICT, with and without input', () => {
    expect(renderPrompt('alpaca', 'Do X.', '')).toBe(
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
        '### Instruction:\nDo X.\n\n### Response:',
    );
    expect(renderPrompt('alpaca', 'Do X.', 'data')).toBe(
      'Below is an instruction that describes a task, paired with an input that provides further context. ' +
        'Write a response that appropriately completes the request.\n\n' +
        '### Instruction:\nDo X.\n\n### Input:\ndata\n\n### Response:',
    );
  });

  it('alpaca-qlora is QLoRA ALPACA_PROMPT_DICT: the same with a space after "### Response:"', () => {
    expect(renderPrompt('alpaca-qlora', 'Do X.', '')).toBe(`${renderPrompt('alpaca', 'Do X.', '')} `);
    expect(renderPrompt('alpaca-qlora', 'Do X.', 'data')).toBe(`${renderPrompt('alpaca', 'Do X.', 'data')} `);
  });

  it('llm-adapters is finetune.py generate_prompt, indentation and trailing spaces included', () => {
    // eval-protocols.md §7 (train string, without the output): two spaces after "request.", 16-space indents.
    expect(renderPrompt('llm-adapters', 'INSTR', '')).toBe(
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n' +
        '                ### Instruction:\n                INSTR\n                \n' +
        '                ### Response:\n                ',
    );
    expect(renderPrompt('llm-adapters', 'INSTR', 'IN')).toBe(
      'Below is an instruction that describes a task, paired with an input that provides further context. ' +
        'Write a response that appropriately completes the request. \n\n' +
        '                ### Instruction:\n                INSTR\n                \n' +
        '                ### Input:\n                IN\n                \n' +
        '                ### Response:\n                ',
    );
  });

  it('plain is the instruction and input without framing', () => {
    expect(renderPrompt('plain', 'Do X.', '')).toBe('Do X.\n');
    expect(renderPrompt('plain', 'Do X.', 'data')).toBe('Do X.\n\ndata\n');
    expect(Object.keys(PROMPT_TEMPLATES)).toEqual(['alpaca', 'alpaca-qlora', 'llm-adapters', 'plain']);
  });
});
