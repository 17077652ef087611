/**
 * The model and micro-batch the training benchmarks share (bench/train.bench.ts, bench/gpu-check.ts): a generated
 * 4-layer, hidden-256 LLaMA (8 heads, 4 kv heads, MLP 688, vocab 512) and one 4 × 256-token batch of fixed ids.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../lib/model/checkpoint.ts';
import { loadModelWeights, type ModelWeights } from '../lib/model/model-weights.ts';
import { writeTinyCheckpoint } from '../lib/model/tiny-checkpoint.ts';
import type { TokenBatch } from '../lib/train/step-program.ts';

export const TINY_TRAINING_MODEL = '4 layers, hidden 256, MLP 688, 8 heads / 4 kv heads, vocab 512';

export interface TinyTrainingSetup {
  ckpt: Checkpoint;
  weights: ModelWeights;
  batch: TokenBatch;
  dispose(): Promise<void>;
}

export async function tinyTrainingSetup(batchSize = 4, seqLen = 256): Promise<TinyTrainingSetup> {
  const dir = mkdtempSync(join(tmpdir(), 'moka-bench-train-'));
  try {
    await writeTinyCheckpoint({
      dir,
      seed: 1,
      hiddenSize: 256,
      intermediateSize: 688,
      numLayers: 4,
      numHeads: 8,
      numKvHeads: 4,
    });
    const ckpt = await openCheckpoint(dir);
    const weights = await loadModelWeights(ckpt);
    const n = batchSize * seqLen;
    const batch: TokenBatch = {
      inputIds: BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919) % 500)),
      labels: BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 104729 + 3) % 500)),
      attentionMask: new Uint8Array(n).fill(1),
      batchSize,
      seqLen,
    };
    return {
      ckpt,
      weights,
      batch,
      async dispose() {
        weights.dispose();
        await ckpt.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
