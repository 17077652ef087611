import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { logContainerStart } from '../../bin/commands/container-start-log.ts';
import { listNvidiaDevices } from '../../lib/engine/provider-choice.ts';
import { cudaProviderInstalled } from '../../lib/engine/session.ts';
import { runMoka } from '../helpers/run-moka.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'moka-start-log-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('logContainerStart', () => {
  it('logs the provider requested by the run config, the one chosen and why, with the runId', async () => {
    mkdirSync(join(dir, 'runs', 'exp-1'), { recursive: true });
    writeFileSync(
      join(dir, 'runs', 'exp-1', 'config.json'),
      JSON.stringify({ runId: 'exp-1', compute: { provider: 'auto' } }),
    );
    const lines: Record<string, unknown>[] = [];
    await logContainerStart(
      { stage: 'train', runUri: join(dir, 'runs', 'exp-1'), variant: 'moka' },
      (level, msg, f) => lines.push({ level, msg, ...f }),
    );
    expect(lines).toHaveLength(1);
    // This machine: whatever it has decides the expected provider (a CI machine has neither GPU nor CUDA provider).
    const cuda = listNvidiaDevices().length > 0 && cudaProviderInstalled();
    expect(lines[0]).toMatchObject({
      level: 'info',
      msg: `execution provider: ${cuda ? 'cuda' : 'cpu'}`,
      runId: 'exp-1',
      stage: 'train',
      variant: 'moka',
      requested: 'auto',
      provider: cuda ? 'cuda' : 'cpu',
      reason: expect.stringMatching(/^auto: /),
    });
  });

  it('still logs the decision (for cpu) when the run config cannot be read', async () => {
    const lines: Record<string, unknown>[] = [];
    await logContainerStart({ stage: 'quantize', runUri: join(dir, 'not-a-run') }, (level, msg, f) =>
      lines.push({ level, msg, ...f }),
    );
    expect(lines[0]).toMatchObject({ level: 'warn', msg: 'run config not readable at container start' });
    expect(lines[1]).toMatchObject({ requested: 'cpu', stage: 'quantize' });
  });
});

describe('moka stage in the task image (MOKA_CONTAINER=1)', () => {
  it('logs the provider decision as its first line, before the stage itself', () => {
    const runUri = join(dir, 'runs', 'never-validated');
    const r = runMoka(['stage', 'report', '--run', runUri], { env: { MOKA_CONTAINER: '1' } });
    const first = JSON.parse(r.stderr.split('\n')[0]!) as Record<string, unknown>;
    expect(first).toMatchObject({
      msg: expect.stringMatching(/^execution provider: /),
      runId: 'never-validated',
      stage: 'report',
    });
    expect(r.stderr).toContain('does not exist'); // then the stage reports the missing run as usual
    // Outside the image, no such line.
    expect(runMoka(['stage', 'report', '--run', runUri]).stderr).not.toContain('execution provider');
  });
});
