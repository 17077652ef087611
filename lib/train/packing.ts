/**
 * What a step program needs to honour packed batches (`packing: true`): several samples share a row, so attention
 * must be block-diagonal (a token sees only earlier tokens of its own sample) and positions restart at 0 for every
 * sample. The batcher supplies `segmentIds` and `positionIds`; `packedAttentionMask` turns segment ids into the
 * additive mask the engine's causal attention takes. For unpacked batches the same graph works with
 * `defaultPositionIds` (0…S−1) and `defaultSegmentIds` (1 on tokens, 0 on padding), so one graph serves both.
 */
import { MASKED_SCORE, equal, fill, reshape, where, zeros, type Tensor } from '../engine/index.ts';
import type { TokenBatch } from './step-program.ts';

/**
 * Additive attention mask [B, 1, S, S] from segment ids [B, S] (int64): 0 where query and key are in the same
 * segment, MASKED_SCORE elsewhere. Combine with `causal: true` in `attention`. Padding (segment 0) only sees
 * padding, so no softmax row is ever fully masked.
 */
export function packedAttentionMask(segmentIds: Tensor, dtype: 'float32' | 'float16' = 'float32'): Tensor {
  const [b, s] = segmentIds.shape as [Tensor['shape'][number], Tensor['shape'][number]];
  const q = reshape(segmentIds, [b, 1, s, 1]);
  const k = reshape(segmentIds, [b, 1, 1, s]);
  const same = equal(q, k);
  return where(same, zeros(segmentIds.graph, dtype, []), fill(segmentIds.graph, dtype, [], MASKED_SCORE));
}

/** Positions 0…S−1 in every row (an unpacked batch). */
export function defaultPositionIds(batch: TokenBatch): BigInt64Array {
  const out = new BigInt64Array(batch.batchSize * batch.seqLen);
  for (let b = 0; b < batch.batchSize; b++) {
    for (let t = 0; t < batch.seqLen; t++) out[b * batch.seqLen + t] = BigInt(t);
  }
  return out;
}

/** One segment per row: 1 on tokens, 0 on padding (an unpacked batch). */
export function defaultSegmentIds(batch: TokenBatch): BigInt64Array {
  return BigInt64Array.from(batch.attentionMask, (m) => BigInt(m));
}
