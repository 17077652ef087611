/**
 * Beam-search decoding as Hugging Face transformers' `generate(num_beams=k, do_sample=False)` does it (the
 * 4.2x `BeamSearchScorer` / `BeamHypotheses` that the LLM-Adapters evaluation ran with):
 *
 *   - each step extends every live beam by every token; the 2k best (beam score + log p) candidates are taken in
 *     order: an EOS candidate among the first k closes a hypothesis (its tokens, EOS excluded), any other fills
 *     the next beams until there are k;
 *   - a hypothesis is ranked by sum_logprobs / length^length_penalty, where length counts the prompt too (the
 *     4.2x decoder-only behaviour) and length_penalty is 1;
 *   - search stops when k hypotheses exist and the best live beam cannot beat the worst of them
 *     (`early_stopping=False`: best_live / current_length^lp ≤ worst), or at `maxNewTokens`, when the live beams
 *     become hypotheses too.
 * Temperature, top-k and top-p do not apply: transformers uses them only when sampling.
 *
 * Each beam has its own key/value cache (model.newCache / prefill / decodeStep); a beam chosen twice is copied.
 */
import { UserError } from '../errors.ts';
import type { KvCache } from './kv-cache.ts';
import type { LlamaModel } from './llama-model.ts';
import { continuationText } from './stop-strings.ts';

export interface BeamSearchOptions {
  numBeams: number;
  maxNewTokens: number;
  /** End-of-sequence ids (default: the checkpoint's). */
  eosIds?: readonly number[];
}

export interface BeamSearchResult {
  /** Generated tokens of the best hypothesis (EOS excluded). */
  tokens: number[];
  /** Its text: what decoding prompt + tokens adds after the prompt (special tokens skipped), as generateText. */
  text: string;
  /** Its summed log-probability. */
  sumLogprob: number;
}

interface Beam {
  tokens: number[];
  score: number;
  cache: KvCache;
  logits: Float32Array;
}

function logSoftmax(logits: Float32Array, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]!);
  let z = 0;
  for (let i = 0; i < n; i++) z += Math.exp(logits[i]! - max);
  const lz = max + Math.log(z);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = logits[i]! - lz;
  return out;
}

/** The `k` best (index, value) pairs of `xs`, best first (ties: lower index first). */
function topK(xs: Float64Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < xs.length; i++) {
    if (best.length === k && xs[i]! <= xs[best[k - 1]!]!) continue;
    let at = best.length;
    while (at > 0 && xs[best[at - 1]!]! < xs[i]!) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}

function cloneCache(model: LlamaModel, c: KvCache): KvCache {
  const copy = model.newCache(c.capacity);
  for (let l = 0; l < c.numLayers; l++) {
    copy.keys[l]!.set(c.keys[l]!);
    copy.values[l]!.set(c.values[l]!);
  }
  copy.length = c.length;
  return copy;
}

/** Beam search from `promptIds`; see the module comment. */
export async function beamSearch(
  model: LlamaModel,
  promptIds: readonly number[],
  opts: BeamSearchOptions,
): Promise<BeamSearchResult> {
  const k = opts.numBeams;
  const maxNew = opts.maxNewTokens;
  if (!Number.isInteger(k) || k < 1) throw new UserError(`the number of beams must be >= 1, got ${k}`);
  if (!Number.isInteger(maxNew) || maxNew < 1)
    throw new UserError(`max new tokens must be >= 1, got ${maxNew}`);
  if (promptIds.length === 0) throw new UserError('the prompt is empty: generation needs at least one token');
  if (promptIds.length + maxNew > model.config.maxPositionEmbeddings) {
    throw new UserError(
      `the prompt (${promptIds.length} tokens) plus ${maxNew} new tokens exceeds the model's ` +
        `max_position_embeddings (${model.config.maxPositionEmbeddings}); shorten the prompt or ask for fewer tokens`,
    );
  }
  const eos = new Set(opts.eosIds ?? model.eosIds());
  const tokenizer = model.checkpoint?.tokenizerJson ? model.tokenizer() : null;
  const vocab = Math.min(model.config.vocabSize, tokenizer?.vocabSize ?? Infinity);
  const rank = (score: number, length: number) => score / length; // length_penalty 1

  const first = model.newCache(promptIds.length + maxNew - 1);
  let beams: Beam[] = [{ tokens: [], score: 0, cache: first, logits: await model.prefill(promptIds, first) }];
  const hyps: { tokens: number[]; score: number; rank: number }[] = [];
  const worst = () => Math.min(...hyps.map((h) => h.rank));
  const addHyp = (tokens: number[], score: number) => {
    const r = rank(score, promptIds.length + tokens.length);
    if (hyps.length < k || r > worst()) {
      hyps.push({ tokens, score, rank: r });
      if (hyps.length > k) hyps.splice(hyps.indexOf(hyps.find((h) => h.rank === worst())!), 1);
    }
  };

  for (let step = 0; step < maxNew; step++) {
    // Candidates: the 2k best continuations of each beam, then the 2k best overall.
    const cands: { beam: number; token: number; score: number }[] = [];
    beams.forEach((b, bi) => {
      const lp = logSoftmax(b.logits, vocab);
      for (const t of topK(lp, 2 * k)) cands.push({ beam: bi, token: t, score: b.score + lp[t]! });
    });
    cands.sort((a, b) => b.score - a.score || a.beam - b.beam || a.token - b.token);
    const next: { beam: number; token: number; score: number }[] = [];
    for (let i = 0; i < Math.min(2 * k, cands.length) && next.length < k; i++) {
      const c = cands[i]!;
      if (eos.has(c.token)) {
        if (i < k) addHyp([...beams[c.beam]!.tokens], c.score);
      } else {
        next.push(c);
      }
    }
    const length = promptIds.length + step + 1;
    const last = step + 1 === maxNew;
    // Done: k hypotheses, and the best live beam cannot beat the worst of them.
    if (next.length === 0 || (hyps.length >= k && worst() >= rank(next[0]!.score, length))) {
      beams = []; // done: the live beams are not hypotheses (transformers' finalize skips a done batch)
      break;
    }
    const uses = new Map<number, number>();
    for (const c of next) uses.set(c.beam, (uses.get(c.beam) ?? 0) + 1);
    const fresh: Beam[] = [];
    for (const c of next) {
      const parent = beams[c.beam]!;
      const left = uses.get(c.beam)! - 1;
      uses.set(c.beam, left);
      // On the last step nothing decodes, so the children can share their parent's cache.
      const cache = left > 0 && !last ? cloneCache(model, parent.cache) : parent.cache;
      const tokens = [...parent.tokens, c.token];
      const logits = last ? parent.logits : await model.decodeStep(c.token, cache);
      fresh.push({ tokens, score: c.score, cache, logits });
    }
    beams = fresh;
  }
  // The live beams after the last step (none when the search stopped early) become hypotheses.
  for (const b of beams) addHyp(b.tokens, b.score);
  const best = hyps.reduce((a, b) => (b.rank > a.rank ? b : a));
  return {
    tokens: best.tokens,
    text: tokenizer ? continuationText(tokenizer, promptIds, best.tokens) : '',
    sumLogprob: best.score,
  };
}
