// Beam search: one beam is greedy decoding; k beams equal a plain (cache-free) beam search over full recomputation.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beamSearch } from '../../lib/model/beam-search.ts';
import { generateTokens } from '../../lib/model/generation.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { scoreTokens } from '../../lib/model/scoring.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';

let root: string;
let model: LlamaModel;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-beam-'));
  await writeTinyCheckpoint({ dir: join(root, 'm'), seed: 4 });
  model = await LlamaModel.load(join(root, 'm'), { intraOpThreads: 1 });
});
afterAll(async () => {
  await model.close();
  await rm(root, { recursive: true, force: true });
});

const prompt = [507, 40, 41, 42, 43, 44];

/** Textbook beam search without EOS: keep the k best sequences by summed log-prob, recomputing each from scratch. */
async function reference(k: number, steps: number): Promise<{ tokens: number[]; score: number }> {
  let beams = [{ tokens: [] as number[], score: 0 }];
  const V = model.tokenizer().vocabSize;
  for (let s = 0; s < steps; s++) {
    const cands: { tokens: number[]; score: number }[] = [];
    for (const b of beams) {
      const logits = Array.from((await model.lastLogits([...prompt, ...b.tokens])).subarray(0, V));
      const max = Math.max(...logits);
      const lse = max + Math.log(logits.reduce((a, v) => a + Math.exp(v - max), 0));
      logits.forEach((l, t) => cands.push({ tokens: [...b.tokens, t], score: b.score + l - lse }));
    }
    cands.sort((a, b) => b.score - a.score);
    beams = cands.slice(0, k);
  }
  return beams[0]!;
}

describe('beamSearch', () => {
  it('with one beam is greedy decoding', async () => {
    const greedy = await generateTokens(model, prompt, { maxNewTokens: 6, eosIds: [] });
    const beam = await beamSearch(model, prompt, { numBeams: 1, maxNewTokens: 6, eosIds: [] });
    expect(beam.tokens).toEqual(greedy.tokens);
  });

  it('with 3 beams finds the sequence of a cache-free reference beam search, and reports its log-probability', async () => {
    const beam = await beamSearch(model, prompt, { numBeams: 3, maxNewTokens: 4, eosIds: [] });
    const ref = await reference(3, 4);
    expect(beam.tokens).toEqual(ref.tokens);
    // float32 logits, float64 sums: the same sequence scores within 1e-4.
    expect(Math.abs(beam.sumLogprob - ref.score)).toBeLessThan(1e-4);
    const [scored] = await scoreTokens(model, [{ context: prompt, continuation: beam.tokens }]);
    expect(Math.abs(beam.sumLogprob - scored!.loglik)).toBeLessThan(1e-4);
  });

  it('an end-of-sequence candidate among the best closes a hypothesis without the EOS token', async () => {
    const first = (await generateTokens(model, prompt, { maxNewTokens: 1, eosIds: [] })).tokens[0]!;
    // The greedy first token is EOS: the empty hypothesis competes with beams that continue.
    const r = await beamSearch(model, prompt, { numBeams: 2, maxNewTokens: 3, eosIds: [first] });
    expect(r.tokens).not.toContain(first);
  });
});
