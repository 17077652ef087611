// Dataset files as downloaded from the Hub: JSON, JSONL and Parquet, the split layouts, and one-line errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isUserError } from '../../lib/errors.ts';
import { readRecords } from '../../lib/eval/data-files.ts';
import { loadTasks } from '../../lib/eval/load-tasks.ts';
import { multipleChoicePrompt } from '../../lib/eval/prompts.ts';
import type { MultipleChoiceDoc, MultipleChoiceTask } from '../../lib/eval/task-definition.ts';
import { writeParquet } from './parquet-writer.ts';

const FIXTURES = fileURLToPath(new URL('./fixtures/data', import.meta.url));
let root: string;

const piqaRecords = () =>
  readFileSync(join(FIXTURES, 'piqa', 'validation.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { goal: string; sol1: string; sol2: string; label: number });

function writePiqaParquet(path: string, drop?: string) {
  const recs = piqaRecords();
  const cols = [
    { name: 'goal', values: recs.map((r) => r.goal) },
    { name: 'sol1', values: recs.map((r) => r.sol1) },
    { name: 'sol2', values: recs.map((r) => r.sol2) },
    { name: 'label', values: recs.map((r) => BigInt(r.label)) },
  ];
  writeParquet(
    path,
    cols.filter((c) => c.name !== drop),
  );
}

async function failure(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => null,
    (e: Error) => e,
  );
  expect(err).not.toBeNull();
  expect(isUserError(err)).toBe(true);
  expect(err!.message.split('\n')).toHaveLength(1);
  return err!;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'moka-data-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('Parquet input (hyparquet)', () => {
  it('a Hub shard (data/validation-00000-of-00001.parquet) gives the same prompts as the JSONL file', async () => {
    const dir = join(root, 'hub', 'piqa', 'data');
    mkdirSync(dir, { recursive: true });
    writePiqaParquet(join(dir, 'validation-00000-of-00001.parquet'));
    const fromParquet = (await loadTasks(['piqa'], { dataDir: join(root, 'hub') }))[0]!;
    const fromJsonl = (await loadTasks(['piqa'], { dataDir: FIXTURES }))[0]!;
    expect(fromParquet.files[0]).toMatch(/validation-00000-of-00001\.parquet$/);
    const prompts = (t: typeof fromJsonl) =>
      t.docs.map((d) => multipleChoicePrompt(t.task as MultipleChoiceTask, d as MultipleChoiceDoc, []));
    expect(prompts(fromParquet)).toEqual(prompts(fromJsonl));
    expect(fromParquet.docs.map((d) => (d as MultipleChoiceDoc).gold)).toEqual([0, 1]);
  });

  it('a Parquet file without a needed column names the file, the column, the columns it has and the layout', async () => {
    const dir = join(root, 'bad', 'piqa');
    mkdirSync(dir, { recursive: true });
    writePiqaParquet(join(dir, 'validation.parquet'), 'sol2');
    const err = await failure(loadTasks(['piqa'], { dataDir: join(root, 'bad') }));
    expect(err.message).toMatch(
      /validation\.parquet: task piqa needs column "sol2", but the file has columns \[goal, sol1, label\]; expected piqa\/validation\.jsonl .*ybisk\/piqa/,
    );
  });

  it('a damaged Parquet file is a one-line error', async () => {
    const f = join(root, 'broken.parquet');
    writeFileSync(f, 'PAR1 not really');
    await failure(readRecords(f));
  });
});

describe('JSON and JSON Lines', () => {
  it('reads a JSON array, JSON Lines, and JSON Lines named .json', async () => {
    const a = join(root, 'a.json');
    writeFileSync(a, JSON.stringify([{ x: 1 }, { x: 2 }]));
    const b = join(root, 'b.json');
    writeFileSync(b, '{"x": 1}\n{"x": 2}\n');
    const c = join(root, 'c.jsonl');
    writeFileSync(c, '{"x": 1}\n\n{"x": 2}');
    for (const f of [a, b, c]) expect(await readRecords(f)).toEqual([{ x: 1 }, { x: 2 }]);
    const bad = join(root, 'd.jsonl');
    writeFileSync(bad, '{"x": 1}\n{oops}\n');
    expect((await failure(readRecords(bad))).message).toMatch(/d\.jsonl line 2 is not valid JSON/);
    // Text that is not UTF-8 (a Latin-1 "é" on line 2) is refused, not read as U+FFFD.
    const latin1 = join(root, 'e.jsonl');
    writeFileSync(latin1, Buffer.from('{"x": 1}\n{"x": "caf\xe9"}\n', 'latin1'));
    expect((await failure(readRecords(latin1))).message).toMatch(
      /e\.jsonl line 2 is not UTF-8 text \(1 line\(s\) in all\); save the file as UTF-8$/,
    );
  });

  it('a missing split names the task, the split and the expected layout; a missing field names file, record, field', async () => {
    const empty = join(root, 'empty');
    mkdirSync(empty, { recursive: true });
    const err = await failure(loadTasks(['arc_challenge'], { dataDir: empty }));
    expect(err.message).toMatch(
      /task arc_challenge: no "test" split under .*; expected arc_challenge\/test\.jsonl/,
    );
    expect(err.message).toContain('allenai/ai2_arc (ARC-Challenge)');
    const dir = join(root, 'nofield', 'boolq');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'validation.jsonl'),
      '{"question": "q", "passage": "p", "label": 1}\n{"question": "q", "label": 0}\n',
    );
    const e2 = await failure(loadTasks(['boolq'], { dataDir: join(root, 'nofield') }));
    expect(e2.message).toMatch(
      /validation\.jsonl record 2: task boolq needs field "passage", which is missing/,
    );
    writeFileSync(join(dir, 'validation.jsonl'), '{"question": "q", "passage": "p", "label": 7}\n');
    const e3 = await failure(loadTasks(['boolq'], { dataDir: join(root, 'nofield') }));
    expect(e3.message).toMatch(
      /record 1: field "label" gives answer 7, outside the 2 choices \(task boolq\)/,
    );
  });

  it('a built-in task without --data says which folder it needs', async () => {
    const err = await failure(loadTasks(['hellaswag'], {}));
    expect(err.message).toMatch(
      /task hellaswag reads its items from files: give --data DIR.*Rowan\/hellaswag/,
    );
  });
});
