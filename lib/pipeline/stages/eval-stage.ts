/**
 * The eval stage: evaluates one variant's adapter (or, for the variant `base`, the un-adapted model: the report's
 * reference row) on the run's eval tasks with lib/eval, on the same base the variants trained on. Writes
 * `evals/<task>.json` (marker last) and `eval-summary.json`; skipped when the run has no evals or the evals
 * folder is complete. Task files named by URI (s3://, file://, paths) are fetched first.
 */
import { evaluate } from '../../eval/index.ts';
import { UserError } from '../../errors.ts';
import { BASE_VARIANT, findVariant, isTaskFile } from '../run-config.ts';
import { getDir, isComplete, putDir, writeJson } from '../store/index.ts';
import { StageContext, type StageOptions, type StageOutcome } from './stage-context.ts';
import { join } from 'node:path';

export async function evalStage(opts: StageOptions): Promise<StageOutcome> {
  const ctx = await StageContext.open(opts);
  if (!opts.variant)
    throw new UserError(`the eval stage needs --variant NAME (or --variant ${BASE_VARIANT})`);
  const name = opts.variant === BASE_VARIANT ? BASE_VARIANT : findVariant(ctx.config, opts.variant).name;
  const { store, keys } = ctx;
  return ctx.run('eval', name, async () => {
    const evals = ctx.config.evals;
    if (!evals)
      return { stage: 'eval', variant: name, status: 'SKIPPED', detail: 'the run config has no evals' };
    if (await isComplete(store, keys.evals(name))) {
      return { stage: 'eval', variant: name, status: 'SKIPPED', detail: 'evals complete' };
    }
    const model = await ctx.modelRecord();
    const modelDir = await ctx.fetch(model.quantized?.uri ?? model.source);
    let adapterDir: string | undefined;
    if (name !== BASE_VARIANT) {
      if (!(await isComplete(store, keys.adapter(name)))) {
        throw new UserError(
          `variant ${name} has no complete adapter in ${store.uriOf(keys.adapter(name))}; run its train stage first`,
        );
      }
      adapterDir = await ctx.scratch('adapters', name);
      await getDir(store, keys.adapter(name), adapterDir);
    }
    const tasks = await Promise.all(evals.tasks.map((t) => (isTaskFile(t) ? ctx.fetch(t) : t)));
    const dataDir = evals.data ? await ctx.fetch(evals.data) : undefined;
    const outDir = join(await ctx.scratch('evals', name), 'evals');
    const summary = await evaluate({
      modelDir,
      ...(adapterDir ? { adapterDir } : {}),
      tasks,
      ...(dataDir ? { dataDir } : {}),
      ...(evals.limit ? { limit: evals.limit } : {}),
      ...(evals.shots !== undefined ? { shots: evals.shots } : {}),
      ...(evals.batchSize ? { batchSize: evals.batchSize } : {}),
      outDir,
      provider: ctx.config.compute.provider,
      ...(ctx.config.compute.threads ? { intraOpThreads: ctx.config.compute.threads } : {}),
      progress: opts.progress ?? 'auto',
    });
    await putDir(store, outDir, keys.evals(name));
    const metrics = Object.fromEntries(
      summary.tasks.map((t) => [
        t.task,
        Object.fromEntries(Object.entries(t.metrics).map(([k, m]) => [k, m.value])),
      ]),
    );
    await writeJson(store, keys.evalSummary(name), {
      variant: name,
      tasks: summary.tasks.map((t) => ({
        task: t.task,
        protocol: t.protocol,
        metrics: t.metrics,
        items: t.items,
      })),
    });
    const first = summary.tasks[0];
    const acc = first?.metrics.acc?.value;
    return {
      stage: 'eval',
      variant: name,
      status: 'SUCCEEDED',
      detail: first ? `${first.task}${acc !== undefined ? ` acc ${acc.toFixed(3)}` : ''}` : 'no tasks',
      result: { metrics },
    };
  });
}
