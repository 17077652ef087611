// Log-likelihood scoring: agreement with the logits, padding invariance, is_greedy, lm-eval tokenization and truncation.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../lib/errors.ts';
import { generateTokens } from '../../lib/model/generation.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { scoreContinuations, scoreTokens, type TokenScoreRequest } from '../../lib/model/scoring.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';

let root: string;
let model: LlamaModel;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-score-'));
  await writeTinyCheckpoint({ dir: join(root, 'm'), seed: 21, numKvHeads: 2 });
  model = await LlamaModel.load(join(root, 'm'));
});
afterAll(async () => {
  await model.close();
  await rm(root, { recursive: true, force: true });
});

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => 1 + ((i * 31 + seed * 97) % 480));

/** Σ log softmax(logits at position i−1)[token i] over the continuation, in float64 from the full logits. */
async function fromLogits(r: TokenScoreRequest): Promise<number> {
  const seq = [...r.context, ...r.continuation];
  const logits = (await model.logits([seq.slice(0, -1)]))[0]!;
  const V = model.config.vocabSize;
  let sum = 0;
  for (let j = r.context.length; j < seq.length; j++) {
    const row = logits.subarray((j - 1) * V, j * V);
    const max = Math.max(...row);
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    sum += row[seq[j]!]! - max - Math.log(z);
  }
  return sum;
}

describe('scoreTokens', () => {
  const requests: TokenScoreRequest[] = [
    { context: ids(30, 1), continuation: ids(4, 2) },
    { context: ids(3, 3), continuation: ids(1, 4) },
    { context: ids(11, 5), continuation: ids(9, 6) },
    { context: ids(17, 7), continuation: ids(2, 8) },
    { context: ids(1, 9), continuation: ids(20, 10) },
  ];

  it('the summed log-probability equals the one computed from the full logits', async () => {
    const got = await scoreTokens(model, requests);
    for (let i = 0; i < requests.length; i++) {
      expect(got[i]!.tokens).toBe(requests[i]!.continuation.length);
      // float32 log-softmax in the graph vs float64 from float32 logits: |Δ| ~1e-6 per token.
      expect(Math.abs(got[i]!.loglik - (await fromLogits(requests[i]!)))).toBeLessThan(1e-4);
    }
  });

  it('padding changes nothing: a batch scores each request as it scores alone (within 1e-5)', async () => {
    const batched = await scoreTokens(model, requests, { batchSize: 8 });
    const pairs = await scoreTokens(model, requests, { batchSize: 2 });
    for (let i = 0; i < requests.length; i++) {
      const [alone] = await scoreTokens(model, [requests[i]!], { batchSize: 1 });
      // Different padded shapes change float32 summation order only: a few 1e-7 on sums of ~6 per token.
      expect(Math.abs(batched[i]!.loglik - alone!.loglik)).toBeLessThan(1e-5);
      expect(Math.abs(pairs[i]!.loglik - alone!.loglik)).toBeLessThan(1e-5);
      expect(batched[i]!.isGreedy).toBe(alone!.isGreedy);
    }
  });

  it('is_greedy is true exactly when every continuation token is the argmax', async () => {
    const context = ids(8, 11);
    const greedy = (await generateTokens(model, context, { maxNewTokens: 5, eosIds: [] })).tokens;
    const other = [...greedy];
    other[3] = (other[3]! + 1) % model.config.vocabSize;
    const [a, b, c] = await scoreTokens(model, [
      { context, continuation: greedy },
      { context, continuation: other },
      { context, continuation: greedy.slice(0, 3) },
    ]);
    expect(a!.isGreedy).toBe(true);
    expect(b!.isGreedy).toBe(false);
    expect(c!.isGreedy).toBe(true);
    expect(a!.loglik).toBeGreaterThan(b!.loglik);
  });

  it('left-truncates long inputs to maxLength tokens like lm-eval', async () => {
    const r = { context: ids(40, 12), continuation: ids(3, 13) };
    const [cut] = await scoreTokens(model, [r], { maxLength: 16 });
    // lm-eval keeps the last maxLength + 1 tokens of context + continuation and drops the final one as input.
    const kept = [...r.context, ...r.continuation].slice(-17);
    const [same] = await scoreTokens(model, [{ context: kept.slice(0, -3), continuation: kept.slice(-3) }]);
    expect(Math.abs(cut!.loglik - same!.loglik)).toBeLessThan(1e-5);
  });

  it('rejects an empty continuation, an empty context and ids outside the vocabulary', async () => {
    await expect(scoreTokens(model, [{ context: [1], continuation: [] }])).rejects.toThrow(UserError);
    await expect(scoreTokens(model, [{ context: [], continuation: [1] }])).rejects.toThrow(
      /context has no tokens/,
    );
    await expect(scoreTokens(model, [{ context: [1], continuation: [512] }])).rejects.toThrow(
      /token id 512 is outside the model's vocabulary \[0, 512\)/,
    );
  });
});

describe('scoreContinuations', () => {
  it('tokenizes lm-eval style: the context with BOS, the trailing space moved to the continuation', async () => {
    const tok = model.tokenizer();
    const [a, b] = await scoreContinuations(model, [
      { context: 'Question: What is the capital of France?\nAnswer:', continuation: ' Paris' },
      { context: 'Question: What is the capital of France?\nAnswer: ', continuation: 'Paris' },
    ]);
    const pair = tok.encodeContextContinuation('Question: What is the capital of France?\nAnswer:', ' Paris');
    expect(pair.context[0]).toBe(tok.bosId);
    const [c] = await scoreTokens(model, [pair]);
    expect(a).toEqual(c);
    // The same split after moving the context's trailing space.
    expect(b!.tokens).toBe(a!.tokens);
    expect(Math.abs(b!.loglik - a!.loglik)).toBeLessThan(1e-6);
  });
});
