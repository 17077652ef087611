/**
 * Evaluation benchmark (issue: evaluation and reports): scored multiple-choice items per second on a tiny model
 * (4 layers, hidden 256) for a 4-choice task with long shared contexts (480-token contexts, 6-token choices):
 *   (a) one request at a time: each (context, choice) from scratch, batch size 1 (`scoreTokens`);
 *   (b) batched with shared contexts: each context once, its choices against its cached keys/values, 8 rows
 *       per run (`SharedContextScorer`, what `evaluate()` uses).
 * The ratio is (b) / (a), measured in the same process on the same requests.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LlamaModel } from '../lib/model/llama-model.ts';
import { scoreTokens } from '../lib/model/scoring.ts';
import { SharedContextScorer, type SharedContextRequest } from '../lib/model/shared-context-scoring.ts';
import { writeTinyCheckpoint } from '../lib/model/tiny-checkpoint.ts';
import { interleavedMedians, round, type BenchEntry, type Suite } from './harness.ts';

const ITEMS = 8;
const CONTEXT = 480;
const CHOICE = 6;
const CHOICES = 4;

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => 1 + ((i * 31 + seed * 97) % 480));

async function sharedContextScoring(): Promise<BenchEntry[]> {
  const dir = await mkdtemp(join(tmpdir(), 'moka-bench-eval-'));
  try {
    await writeTinyCheckpoint({
      dir,
      seed: 1,
      numLayers: 4,
      hiddenSize: 256,
      intermediateSize: 768,
      numHeads: 4,
      numKvHeads: 2,
    });
    const model = await LlamaModel.load(dir);
    const scorer = new SharedContextScorer(model);
    try {
      const groups: SharedContextRequest[] = Array.from({ length: ITEMS }, (_, i) => ({
        context: ids(CONTEXT, i),
        continuations: Array.from({ length: CHOICES }, (_, c) => ids(CHOICE, 100 + i * CHOICES + c)),
      }));
      const pairs = groups.flatMap((g) =>
        g.continuations.map((c) => ({ context: g.context, continuation: c })),
      );
      const oneAtATime = async () => {
        for (const p of pairs) await scoreTokens(model, [p], { batchSize: 1 });
      };
      const shared = () => scorer.score(groups, { batchSize: 8 });
      // Same results (a check, not a measurement): the benchmark compares equal work.
      const a = await scoreTokens(model, pairs, { batchSize: 1 });
      const b = (await shared()).flat();
      const worst = Math.max(...a.map((r, i) => Math.abs(r.loglik - b[i]!.loglik)));
      if (worst > 1e-3) throw new Error(`shared-context scoring differs from scratch by ${worst}`);
      const [aMs, bMs] = await interleavedMedians(oneAtATime, shared, 5);
      const aRate = (ITEMS * 1000) / aMs;
      const bRate = (ITEMS * 1000) / bMs;
      return [
        {
          name: `eval.mc_items_per_sec.shared_context_batched.4x256.ctx${CONTEXT}.choices${CHOICES}`,
          value: round(bRate),
          unit: 'items/s',
          baseline: 'one request at a time (each choice from scratch, batch 1)',
          baselineValue: round(aRate),
          ratio: round(bRate / aRate),
          notes: `${ITEMS} items of ${CHOICES} choices, ${CONTEXT}-token contexts, ${CHOICE}-token choices; batch 8; max |Δ loglik| ${worst.toExponential(1)}`,
        },
      ];
    } finally {
      await scorer.release();
      await model.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export const evalSuite: Suite = { name: 'eval', run: sharedContextScoring };
