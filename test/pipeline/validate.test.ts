/** The validate step and the CLI entry points refuse bad runs before any work, listing every problem. */
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isUserError } from '../../lib/errors.ts';
import { validateRunInput } from '../../lib/pipeline/handlers.ts';
import { FileStore } from '../../lib/pipeline/store/index.ts';
import { DETERMINISTIC_FAILURE_EXIT_CODE } from '../../lib/pipeline/state-names.ts';
import { runMoka } from '../helpers/run-moka.ts';
import { tinyRun } from './fixtures.ts';

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(isUserError(err)).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('validateRunInput', () => {
  it('lists every unreachable input and an unwritable store in one error, and writes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-validate-'));
    writeFileSync(join(dir, 'not-a-folder'), 'x');
    mkdirSync(join(dir, 'data'));
    writeFileSync(join(dir, 'data', 'ok.jsonl'), '{"text": "A1"}\n');
    const store = new FileStore(join(dir, 'not-a-folder', 'store'));
    const msg = await refusal(
      validateRunInput(
        {
          model: join(dir, 'no-model'),
          adapters: [
            { name: 'moka', type: 'moka' },
            { name: 'lora', type: 'lora', initFrom: join(dir, 'old-adapter') },
          ],
          data: { train: [join(dir, 'data', 'ok.jsonl'), join(dir, 'data', 'missing.jsonl')] },
          evals: { tasks: ['arc_easy', join(dir, 'tasks', 'mine.jsonl')] },
        },
        { store },
      ),
    );
    const lines = msg
      .split('\n')
      .slice(1)
      .map((l) => l.trim());
    expect(msg).toMatch(/^run config cannot run \(5 problems\):/);
    expect(lines[0]).toMatch(/store .*not-a-folder\/store cannot be written/);
    expect(lines.slice(1)).toEqual([
      expect.stringMatching(
        /^model: .*no-model\/config\.json does not exist \(expected a Hugging Face model folder/,
      ),
      expect.stringMatching(/^data\.train\[1\]: .*missing\.jsonl does not exist/),
      expect.stringMatching(/^adapters\[1\]\.initFrom: .*old-adapter\/adapter_config\.json does not exist/),
      expect.stringMatching(/^evals\.tasks\[1\]: .*mine\.jsonl does not exist \(task file\)/),
    ]);
    expect(readdirSync(dir).sort()).toEqual(['data', 'not-a-folder']);
  });

  it('refuses a changed config under an existing runId (a re-run resumes, so it must be the same run)', async () => {
    const { dir, config } = await tinyRun(4);
    const store = new FileStore(join(dir, 'store'));
    const plan = await validateRunInput({ ...config, runId: 'same' }, { store });
    expect(plan).toMatchObject({
      runId: 'same',
      variants: ['moka', 'lora'],
      evaluate: true,
      quantizeNeeded: true,
      resumed: false,
    });
    expect((await validateRunInput({ ...config, runId: 'same' }, { store })).resumed).toBe(true);
    const msg = await refusal(
      validateRunInput(
        { ...config, runId: 'same', training: { ...(config.training as object), seed: 9 } },
        { store },
      ),
    );
    expect(msg).toMatch(/run same already exists .* with a different config/);
  });
});

describe('CLI', () => {
  it('moka run lists every problem of a bad config and starts nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-run-cli-'));
    writeFileSync(
      join(dir, 'bad.json'),
      JSON.stringify({ runId: 'a/../b', model: 'gs://bucket/m', adapters: { type: 'qlora' }, data: {} }),
    );
    const r = runMoka(['run', join(dir, 'bad.json'), '--store', join(dir, 'store')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/run config .*bad\.json is invalid \(4 problems\)/);
    for (const field of ['runId', 'model', 'adapters.type', 'data.train'])
      expect(r.stderr).toContain(`  ${field}: `);
    expect(existsSync(join(dir, 'store', 'runs'))).toBe(false);
  });

  it('moka stage exits 42 on a deterministic failure, and moka schema prints the JSON Schema', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-stage-cli-'));
    const r = runMoka(['stage', 'train', '--run', join(dir, 'runs', 'nope'), '--variant', 'moka']);
    expect(r.code).toBe(DETERMINISTIC_FAILURE_EXIT_CODE);
    expect(r.stderr).toMatch(/config\.json does not exist: the run was not validated/);
    const s = runMoka(['schema']);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.stdout)).toMatchObject({
      type: 'object',
      required: expect.arrayContaining(['model', 'adapters', 'data']),
    });
  });
});
