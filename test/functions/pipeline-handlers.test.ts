/**
 * The validate-run and finalize Lambda wrappers: one structured JSON log line per call (success or failure),
 * over a file:// artifact store (the handlers' logic is tested with the pipeline; this checks the wrappers).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { handler as finalize } from '../../functions/finalize.ts';
import { handler as validateRun } from '../../functions/validate-run.ts';

let dir: string;
let lines: Record<string, unknown>[];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'moka-handlers-'));
  mkdirSync(join(dir, 'store'));
  process.env.MOKA_ARTIFACT_URI = pathToFileURL(join(dir, 'store')).href;
  lines = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
    lines.push(JSON.parse(String(s)) as Record<string, unknown>);
    return true;
  });
});
afterEach(() => {
  vi.restoreAllMocks();
  delete process.env.MOKA_ARTIFACT_URI;
  rmSync(dir, { recursive: true, force: true });
});

describe('validate-run and finalize handlers', () => {
  it('log the validated plan and the final summary as JSON lines', async () => {
    mkdirSync(join(dir, 'model'));
    writeFileSync(join(dir, 'model', 'config.json'), '{}');
    writeFileSync(join(dir, 'train.jsonl'), '{"instruction":"a","output":"b"}\n');
    const plan = await validateRun({
      runId: 'h-1',
      model: join(dir, 'model'),
      quantize: false,
      adapters: { type: 'lora', r: 2 },
      data: { train: join(dir, 'train.jsonl') },
    });
    expect(lines[0]).toMatchObject({ level: 'info', msg: 'run validated', runId: 'h-1', variants: ['lora'] });
    expect(typeof lines[0]!.time).toBe('string');
    const summary = await finalize({
      ...plan,
      error: { Error: 'States.TaskFailed', Cause: '{"StatusReason":"Essential container exited"}' },
    });
    expect(summary.status).toBe('FAILED');
    expect(lines[1]).toMatchObject({ level: 'warn', msg: 'run failed', runId: 'h-1', status: 'FAILED' });
  });

  it('log a rejected input at warn level with the problems, then fail', async () => {
    await expect(validateRun({ model: 's3://models-bucket/m', adapters: { type: 'nope' } })).rejects.toThrow(
      /invalid \(2 problems\)/,
    );
    expect(lines[0]).toMatchObject({
      level: 'warn',
      msg: 'run rejected',
      error: { name: 'UserError', message: expect.stringContaining('adapters.type') },
    });
  });
});
