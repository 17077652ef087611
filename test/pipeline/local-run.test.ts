/**
 * The synthesized state machine run locally (lib/pipeline/local-runner.ts) on a tiny model: the order of states,
 * the artifacts, a re-run that does no work, and a failing stage recorded in status.json.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { localPipelineDefinition } from '../../lib/infra/local-definition.ts';
import { runLocal, type LocalRunResult } from '../../lib/pipeline/local-runner.ts';
import { StageContext } from '../../lib/pipeline/stages/index.ts';
import type { RunStatus } from '../../lib/pipeline/status.ts';
import { STATE_NAMES as N } from '../../lib/pipeline/state-names.ts';
import { FileStore } from '../../lib/pipeline/store/index.ts';
import { tinyRun, type TinyRun } from './fixtures.ts';

const definition = localPipelineDefinition();
let run: TinyRun;
let store: FileStore;
let first: LocalRunResult;
const log: string[] = [];

const json = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

beforeAll(async () => {
  run = await tinyRun(12);
  store = new FileStore(join(run.dir, 'store'));
  first = await runLocal({
    definition,
    input: { ...run.config, runId: 'compare' },
    store,
    workDir: join(run.dir, 'work'),
    progress: 'none',
    log: (l) => log.push(l),
  });
}, 120_000);

describe('local run of the synthesized state machine', () => {
  it('visits the states in order and succeeds', () => {
    expect(first.error).toBeUndefined();
    expect(first.status).toBe('SUCCEEDED');
    const t = first.transitions;
    const at = (name: string) => t.indexOf(name);
    const last = (name: string) => t.lastIndexOf(name);
    expect(t.slice(0, 4)).toEqual([N.validate, N.quantizeChoice, N.quantize, N.variants]);
    expect(t.filter((s) => s === N.train)).toHaveLength(2);
    expect(t.filter((s) => s === N.evaluate)).toHaveLength(2);
    expect(t.filter((s) => s === N.evaluateBase)).toHaveLength(1);
    expect(at(N.train)).toBeLessThan(at(N.evaluate));
    expect(last(N.evaluate)).toBeLessThan(at(N.report));
    expect(t.slice(-3)).toEqual([N.report, N.finalize, N.succeeded]);
    expect(log).toContain(`→ ${N.train} [moka]`);
  });

  it('writes the run layout: config, status, quantized cache, checkpoints, adapters, evals, report', () => {
    const runDir = join(store.root, 'runs', 'compare');
    const status = json<RunStatus>(join(runDir, 'status.json'));
    expect(status.status).toBe('SUCCEEDED');
    expect(Object.keys(status.stages).sort()).toEqual([
      'eval:base',
      'eval:lora',
      'eval:moka',
      'quantize',
      'report',
      'train:lora',
      'train:moka',
    ]);
    for (const r of Object.values(status.stages)) expect(r.status).toBe('SUCCEEDED');
    expect(json<{ runId: string }>(join(runDir, 'config.json')).runId).toBe('compare');
    const model = json<{ quantized: { key: string } }>(join(runDir, 'model.json'));
    expect(statSync(join(store.root, 'cache', 'quantized', model.quantized.key, '_COMPLETE')).isFile()).toBe(
      true,
    );
    for (const v of ['moka', 'lora']) {
      const vd = join(runDir, 'variants', v);
      for (const f of [
        'adapter/_COMPLETE',
        'adapter/adapter_model.safetensors',
        'adapter/adapter_config.json',
        'evals/codes.json',
        'evals/_COMPLETE',
        'metrics.jsonl',
        'train-summary.json',
        'checkpoints/step-12/_COMPLETE',
      ]) {
        expect(statSync(join(vd, f)).size, `${v}/${f}`).toBeGreaterThan(0);
      }
    }
    expect(statSync(join(runDir, 'base', 'evals', 'codes.json')).size).toBeGreaterThan(0);
    for (const f of ['report.html', 'report.md', 'report.json', '_COMPLETE'])
      expect(statSync(join(runDir, 'report', f)).size).toBeGreaterThan(0);
    const out = first.output!;
    expect(out.runId).toBe('compare');
    expect(Object.keys(out.adapterUris).sort()).toEqual(['lora', 'moka']);
    expect(out.reportUri).toBe(`${store.uri}/runs/compare/report/report.html`);
    expect(Object.keys(out.metrics).sort()).toEqual(['base', 'lora', 'moka']);
    expect(out.metrics.moka!.codes!.acc).toBeGreaterThanOrEqual(0);
  });

  it('re-running a finished run does no work: Quantize is skipped (cached) and every stage skips on its marker', async () => {
    const adapter = join(
      store.root,
      'runs',
      'compare',
      'variants',
      'moka',
      'adapter',
      'adapter_model.safetensors',
    );
    const before = statSync(adapter).mtimeMs;
    const again = await runLocal({
      definition,
      input: { ...run.config, runId: 'compare' },
      store,
      workDir: join(run.dir, 'work'),
      progress: 'none',
      log: () => {},
    });
    expect(again.status).toBe('SUCCEEDED');
    expect(again.transitions).not.toContain(N.quantize);
    const status = json<RunStatus>(join(store.root, 'runs', 'compare', 'status.json'));
    for (const [id, r] of Object.entries(status.stages)) {
      if (id !== 'quantize') expect(r.status, id).toBe('SKIPPED');
    }
    expect(statSync(adapter).mtimeMs).toBe(before);
    expect(again.output!.metrics).toEqual(first.output!.metrics);
  });

  it('a failing train stage fails the execution with the stage error, and status.json records it', async () => {
    const failed = await runLocal({
      definition,
      input: { ...run.config, runId: 'broken', evals: undefined },
      store,
      workDir: join(run.dir, 'work'),
      progress: 'none',
      log: () => {},
      stages: {
        train: async (opts) => {
          const ctx = await StageContext.open(opts);
          return ctx.run('train', opts.variant, async () => {
            throw new Error('CUDA error: an illegal memory access was encountered');
          });
        },
      },
    });
    expect(failed.status).toBe('FAILED');
    expect(failed.error!.Error).toBe('States.TaskFailed');
    expect(JSON.parse(failed.error!.Cause)).toMatchObject({
      Status: 'FAILED',
      StatusReason: 'CUDA error: an illegal memory access was encountered',
    });
    expect(failed.transitions).toContain(N.recordFailure);
    expect(failed.transitions.at(-1)).toBe(N.failed);
    expect(failed.transitions).not.toContain(N.report);
    const status = json<RunStatus>(join(store.root, 'runs', 'broken', 'status.json'));
    expect(status.status).toBe('FAILED');
    expect(status.error).toMatchObject({
      Error: 'States.TaskFailed',
      Cause: 'CUDA error: an illegal memory access was encountered',
    });
    expect(status.error!.stage).toMatch(/^train:(moka|lora)$/);
    expect(status.stages[status.error!.stage!]!.status).toBe('FAILED');
  });

  it('a config that fails validation fails the execution with every problem and writes no run folder', async () => {
    const failed = await runLocal({
      definition,
      input: {
        ...run.config,
        runId: 'never',
        model: join(run.dir, 'missing-model'),
        data: { train: join(run.dir, 'missing.jsonl') },
      },
      store,
      progress: 'none',
      log: () => {},
    });
    expect(failed.status).toBe('FAILED');
    expect(failed.transitions).toEqual([N.validate, N.recordFailure, N.failed]);
    expect(failed.error!.Error).toBe('UserError');
    expect(failed.error!.Cause).toMatch(
      /cannot run \(2 problems\):\n {2}model: .*missing-model\/config\.json does not exist.*\n {2}data\.train\[0\]: .*missing\.jsonl does not exist/s,
    );
    expect(failed.runId).toBeUndefined();
    expect(existsSync(join(store.root, 'runs', 'never'))).toBe(false);
  });
});
