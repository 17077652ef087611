/**
 * The report stage: gathers every variant's evals, training metrics and adapter (and the base model's evals)
 * from the store into local run folders, builds report.json/.md/.html with lib/eval's buildReport, and uploads
 * them to `report/` (marker last). Skipped when the report is complete or the run has no evals (a report compares
 * evaluation results).
 */
import { join } from 'node:path';
import { buildReport } from '../../eval/index.ts';
import { BASE_VARIANT, variantNames } from '../run-config.ts';
import { getDir, isComplete, joinKey, putDir } from '../store/index.ts';
import { StageContext, type StageOptions, type StageOutcome } from './stage-context.ts';

const TRAINING_FILES = ['metrics.jsonl', 'train-config.json', 'train-summary.json'];

export async function reportStage(opts: StageOptions): Promise<StageOutcome> {
  const ctx = await StageContext.open(opts);
  const { store, keys } = ctx;
  return ctx.run('report', undefined, async () => {
    if (!ctx.config.evals)
      return { stage: 'report', status: 'SKIPPED', detail: 'the run config has no evals' };
    if (await isComplete(store, keys.report))
      return { stage: 'report', status: 'SKIPPED', detail: 'report complete' };
    const inputs = await ctx.scratch('report-inputs');
    const runDirs: string[] = [];
    const names: string[] = [];
    for (const name of [BASE_VARIANT, ...variantNames(ctx.config)]) {
      if (!(await isComplete(store, keys.evals(name)))) continue;
      const dir = join(inputs, name);
      await getDir(store, keys.evals(name), join(dir, 'evals'));
      if (name !== BASE_VARIANT) {
        if (await isComplete(store, keys.adapter(name)))
          await getDir(store, keys.adapter(name), join(dir, 'adapter'));
        for (const f of TRAINING_FILES) {
          const key = joinKey(keys.variant(name), f);
          if (await store.exists(key)) await store.getFile(key, join(dir, f));
        }
      }
      runDirs.push(dir);
      names.push(name);
    }
    const outDir = await ctx.scratch('report');
    const report = await buildReport({ runDirs, names, outDir });
    await putDir(store, outDir, keys.report);
    ctx.log(report.table);
    return {
      stage: 'report',
      status: 'SUCCEEDED',
      detail: store.uriOf(joinKey(keys.report, 'report.html')),
      result: { reportUri: store.uriOf(joinKey(keys.report, 'report.html')), table: report.table },
    };
  });
}
