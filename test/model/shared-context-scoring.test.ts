// Shared-context scoring: the same log-likelihoods and is_greedy as scoring each (context, continuation) from scratch.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../lib/errors.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { scoreTokens } from '../../lib/model/scoring.ts';
import {
  SharedContextScorer,
  scoreSharedContexts,
  type SharedContextRequest,
} from '../../lib/model/shared-context-scoring.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { generateTokens } from '../../lib/model/generation.ts';

let root: string;
let model: LlamaModel;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-shared-'));
  // Llama-3.1 RoPE scaling and GQA: the position shift of left padding must hold for scaled frequencies too.
  await writeTinyCheckpoint({
    dir: join(root, 'm'),
    seed: 8,
    numKvHeads: 2,
    ropeScaling: { factor: 8, originalMaxPositionEmbeddings: 64 },
  });
  model = await LlamaModel.load(join(root, 'm'), { intraOpThreads: 1 });
});
afterAll(async () => {
  await model.close();
  await rm(root, { recursive: true, force: true });
});

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => 1 + ((i * 37 + seed * 101) % 480));

const GROUPS: SharedContextRequest[] = [
  { context: ids(40, 1), continuations: [ids(3, 2), ids(1, 3), ids(7, 4), ids(2, 5)] },
  { context: ids(5, 6), continuations: [ids(2, 7), ids(9, 8)] },
  { context: ids(1, 9), continuations: [ids(4, 10)] },
  { context: ids(17, 11), continuations: [ids(1, 12), ids(1, 13), ids(1, 14)] },
  { context: ids(33, 15), continuations: [ids(20, 16), ids(5, 17), ids(6, 18)] },
];

describe('scoreSharedContexts', () => {
  it.each([1, 3, 8])(
    'equals scoring each pair from scratch (|Δ loglik| < 1e-4, same is_greedy) with batch size %i',
    async (batchSize) => {
      const shared = await scoreSharedContexts(model, GROUPS, { batchSize });
      const pairs = GROUPS.flatMap((g) =>
        g.continuations.map((c) => ({ context: g.context, continuation: c })),
      );
      const scratch = await scoreTokens(model, pairs, { batchSize: 4 });
      let k = 0;
      GROUPS.forEach((g, gi) =>
        g.continuations.forEach((c, ci) => {
          const s = shared[gi]![ci]!;
          const r = scratch[k++]!;
          expect(s.tokens).toBe(c.length);
          // Left padding shifts positions (RoPE is relative, only cos/sin rounding differs) and the padded
          // shapes change float32 summation order: ~1e-6 per token on log-probs of ~6; 1e-4 leaves room.
          expect(Math.abs(s.loglik - r.loglik)).toBeLessThan(1e-4);
          expect(s.isGreedy).toBe(r.isGreedy);
        }),
      );
    },
  );

  it('reports is_greedy for a greedy continuation and not for a changed one', async () => {
    const context = ids(12, 20);
    const greedy = (await generateTokens(model, context, { maxNewTokens: 4, eosIds: [] })).tokens;
    const other = [...greedy];
    other[2] = (other[2]! + 1) % 480;
    const [a, b] = (await scoreSharedContexts(model, [{ context, continuations: [greedy, other] }]))[0]!;
    expect(a!.isGreedy).toBe(true);
    expect(b!.isGreedy).toBe(false);
    expect(a!.loglik).toBeGreaterThan(b!.loglik);
  });

  it('falls back to lm-eval truncation for requests longer than maxLength', async () => {
    const g = { context: ids(30, 21), continuations: [ids(3, 22), ids(1, 23)] };
    const [shared] = await scoreSharedContexts(model, [g], { maxLength: 16 });
    const scratch = await scoreTokens(
      model,
      g.continuations.map((c) => ({ context: g.context, continuation: c })),
      { maxLength: 16 },
    );
    shared!.forEach((s, i) => expect(Math.abs(s.loglik - scratch[i]!.loglik)).toBeLessThan(1e-5));
  });

  it('rejects empty contexts and continuations and ids outside the vocabulary', async () => {
    const scorer = new SharedContextScorer(model);
    await expect(scorer.score([{ context: [], continuations: [[1]] }])).rejects.toThrow(
      /context has no tokens/,
    );
    await expect(scorer.score([{ context: [1], continuations: [[]] }])).rejects.toThrow(UserError);
    await expect(scorer.score([{ context: [1], continuations: [[512]] }])).rejects.toThrow(
      /token id 512 is outside/,
    );
    await scorer.release();
  });
});
