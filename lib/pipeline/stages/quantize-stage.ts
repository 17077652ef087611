/**
 * The quantize stage: the run's source checkpoint → a 4-bit one in the shared cache
 * (`cache/quantized/<key>/`, key = source content + settings: model-cache.ts), skipped when the run does not
 * quantize or the cache entry is complete. A local store receives the output in place (quantizeCheckpoint's own
 * atomic folder), a remote one by upload; either way `_COMPLETE` is written last.
 */
import { join } from 'node:path';
import { quantizeCheckpoint } from '../../quant/quantize-checkpoint.ts';
import { createPhaseProgress } from '../../train/progress.ts';
import { quantizedCacheKey } from '../run-layout.ts';
import { isComplete, markComplete, putDir } from '../store/index.ts';
import { StageContext, type StageOptions, type StageOutcome } from './stage-context.ts';

export async function quantizeStage(opts: StageOptions): Promise<StageOutcome> {
  const ctx = await StageContext.open(opts);
  return ctx.run('quantize', undefined, async () => {
    const model = await ctx.modelRecord();
    const q = ctx.config.quantize;
    if (!model.quantized || q === false)
      return { stage: 'quantize', status: 'SKIPPED', detail: 'quantize is false' };
    const key = quantizedCacheKey(model.quantized.key);
    if (await isComplete(ctx.store, key)) {
      return { stage: 'quantize', status: 'SKIPPED', detail: `cached: ${model.quantized.uri}` };
    }
    const source = await ctx.fetch(model.source);
    const inPlace = ctx.store.localPath(key);
    const outDir = inPlace ?? join(await ctx.scratch('quantized'), 'model');
    const reporter = createPhaseProgress('quantize', { mode: opts.progress ?? 'auto' });
    let summary;
    try {
      summary = await quantizeCheckpoint({
        modelDir: source,
        outDir,
        format: q.format,
        blockSize: q.blockSize,
        doubleQuant: q.doubleQuant,
        symmetric: q.symmetric,
        quantizeLmHead: q.quantizeLmHead,
        // A leftover of an interrupted attempt without _COMPLETE is ours to replace.
        force: true,
        onProgress: (e) =>
          e.phase === 'quantize'
            ? reporter.update('quantize', e.bytesDone, e.bytesTotal, `${e.index}/${e.count} ${e.tensor}`)
            : reporter.update('write', e.bytesDone, e.bytesTotal, e.file),
      });
    } finally {
      reporter.stop();
    }
    if (inPlace) await markComplete(ctx.store, key);
    else await putDir(ctx.store, outDir, key);
    return {
      stage: 'quantize',
      status: 'SUCCEEDED',
      detail: `${summary.totals.quantizedWeights} weights → ${model.quantized.uri}`,
      result: {
        uri: model.quantized.uri,
        relativeError: summary.totals.relativeError,
        bitsPerQuantizedWeight: summary.totals.bitsPerQuantizedWeight,
      },
    };
  });
}
