/**
 * Log-likelihood scoring of several continuations of one context, with the context run once.
 *
 * A multiple-choice question asks for loglikelihood(context, choice_i) for every choice: lm-evaluation-harness
 * runs context + choice_i once per choice. Here each context runs once (phase A), its keys/values are kept, and
 * every continuation runs against them (phase B), as decoding with a key/value cache does:
 *
 *   phase A  contexts, left-padded to one length P, at positions 0..P−1 → per layer keys/values [B, kv, P, D],
 *            and log p(continuation[0]) from the last context position, for each continuation;
 *   phase B  continuation[0..n−2] of each (context, continuation) row, right-padded to S tokens, at positions
 *            P..P+S−1 against its context's keys/values (`buildLlamaGraph` with a cache of capacity P) →
 *            log p(continuation[j]) for j ≥ 1.
 *
 * Left padding makes every context end at position P−1, so the rows of a batch share one RoPE table. RoPE
 * rotates q and k by their absolute positions and attention depends only on their difference, so a context
 * placed at P−n..P−1 scores as it does at 0..n−1 (the same float32 invFreq; only the rounding of cos/sin
 * differs, ~1e-7 relative). Masked slots (left padding, unused cache, right padding) are never attended.
 *
 * Results equal `scoreTokens` on (context, continuation) pairs up to float32 rounding, including lm-eval's
 * left truncation: a request whose context + continuation exceeds `maxLength` + 1 tokens is scored by
 * `scoreTokens` itself (its truncation depends on the continuation, so nothing is shared).
 *
 * Memory: phase B feeds each row its own copy of its context's keys/values: per run
 * 2 · layers · rows · kv_heads · P · head_dim float32 values (8 rows of 512 tokens on Llama-3-8B: 1 GiB), which
 * is why `batchSize` bounds rows per run.
 */
import {
  Graph,
  Session,
  cast,
  equal,
  gather,
  logSoftmax,
  mul,
  reduceMax,
  reduceSum,
  reshape,
  unsqueeze,
  type Feed,
  type Tensor,
} from '../engine/index.ts';
import { UserError } from '../errors.ts';
import { buildLlamaGraph, type LlamaGraph } from './llama-graph.ts';
import { bucketBatch, bucketLength, type LlamaModel } from './llama-model.ts';
import { positionRange, ropeCosSin } from './rope-frequencies.ts';
import { scoreTokens, type ScoreOptions, type ScoreResult } from './scoring.ts';

/** One context and the continuations scored after it (token ids; the context starts with BOS as lm-eval's). */
export interface SharedContextRequest {
  context: readonly number[];
  continuations: readonly (readonly number[])[];
}

/** Adds the per-(row, target) scoring head over `llama.hidden` (as LlamaModel's score run does). */
function addScoringHead(g: Graph, llama: LlamaGraph): Record<string, Tensor> {
  const H = llama.config.hiddenSize;
  const V = llama.config.vocabSize;
  const rows = g.input('rows', 'int64', ['rows']);
  const targets = g.input('targets', 'int64', ['rows']);
  const logp = logSoftmax(llama.lmHead(gather(reshape(llama.hidden, [-1, H]), rows)), -1);
  const vocabIds = g.constant(
    'int64',
    [V],
    BigInt64Array.from({ length: V }, (_, i) => BigInt(i)),
  );
  // log p(target) as a masked sum: (target == 0..V−1) selects one entry, and 0·x adds exactly 0.
  const onehot = cast(equal(unsqueeze(targets, -1), vocabIds), 'float32');
  return { logprob: reduceSum(mul(onehot, logp), -1), max_logprob: reduceMax(logp, -1) };
}

/** A session computing `outputs`, fed every input of its graph. */
function sessionOver(model: LlamaModel, g: Graph, outputs: Record<string, Tensor>): Session {
  const inputs = g.tensors.filter((t) => t.kind === 'input');
  return new Session(g, { inputs, outputs }, model.sessionOptions());
}

/** Scored rows for a scoring head: flat row indices and targets, padded to a bucketed count. */
function rowFeeds(rows: readonly number[], targets: readonly number[]): Record<string, Feed> {
  const n = bucketLength(rows.length);
  const r = new BigInt64Array(n);
  const t = new BigInt64Array(n);
  rows.forEach((row, i) => {
    r[i] = BigInt(row);
    t[i] = BigInt(targets[i]!);
  });
  return { rows: { data: r, dims: [n] }, targets: { data: t, dims: [n] } };
}

/**
 * One run of a scoring session: `ids` [n, positions.length] at `positions`, `mask` [n, width] over the cached
 * slots and then the ids, the scoring head's rows and targets, and `extra` feeds (past keys/values).
 */
function runScoring(
  model: LlamaModel,
  session: Session,
  ids: BigInt64Array,
  mask: BigInt64Array,
  positions: number[],
  scored: readonly number[],
  targets: readonly number[],
  extra: Record<string, Feed> = {},
) {
  const S = positions.length;
  const n = ids.length / S;
  const { cos, sin } = ropeCosSin(model.invFreq, positions);
  const half = model.config.headDim / 2;
  return session.run({
    ...model.options.feeds,
    ...extra,
    input_ids: { data: ids, dims: [n, S] },
    attention_mask: { data: mask, dims: [n, mask.length / n] },
    rope_cos: { data: cos, dims: [S, half] },
    rope_sin: { data: sin, dims: [S, half] },
    ...rowFeeds(scored, targets),
  });
}

/**
 * Scores many (context, continuations) groups with each context run once; see the module comment. Holds its
 * ORT sessions (one per phase-B cache capacity) until `release()`.
 */
export class SharedContextScorer {
  private cachedContextSession: Session | null = null;
  private readonly continuationSessions = new Map<string, Session>();

  constructor(readonly model: LlamaModel) {}

  /**
   * Results per group, per continuation, in request order. `batchSize` (default 8) bounds the contexts of one
   * phase-A run and the continuation rows of one phase-B run. Throws UserError on an empty context or
   * continuation, and on token ids outside the vocabulary.
   */
  async score(groups: readonly SharedContextRequest[], opts: ScoreOptions = {}): Promise<ScoreResult[][]> {
    const batchSize = opts.batchSize ?? 8;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new UserError(`batch size must be a positive integer, got ${batchSize}`);
    }
    const maxLength = opts.maxLength ?? this.model.config.maxPositionEmbeddings;
    const V = this.model.config.vocabSize;
    groups.forEach((g, gi) => {
      if (g.context.length === 0) {
        throw new UserError(`request ${gi}: the context has no tokens; start it with BOS (as lm-eval does)`);
      }
      for (const ids of [g.context, ...g.continuations]) {
        for (const id of ids) {
          if (!Number.isInteger(id) || id < 0 || id >= V) {
            throw new UserError(`token id ${id} is outside the model's vocabulary [0, ${V})`);
          }
        }
      }
      g.continuations.forEach((c, ci) => {
        if (c.length === 0) {
          throw new UserError(
            `request ${gi}, continuation ${ci}: the continuation has no tokens; there is nothing to score`,
          );
        }
      });
    });
    const results: ScoreResult[][] = groups.map((g) => new Array(g.continuations.length));

    // Groups too long to share (lm-eval truncation applies) go through scoreTokens unchanged.
    const fits = (g: SharedContextRequest) =>
      g.context.length + Math.max(0, ...g.continuations.map((c) => c.length)) - 1 <= maxLength;
    const long = groups.flatMap((g, gi) =>
      fits(g) ? [] : g.continuations.map((c, ci) => ({ gi, ci, context: g.context, continuation: c })),
    );
    if (long.length > 0) {
      const scored = await scoreTokens(this.model, long, { batchSize, maxLength });
      long.forEach((r, i) => (results[r.gi]![r.ci] = scored[i]!));
    }

    // Longest contexts first (lm-eval's order), so each batch pads little.
    const order = groups
      .map((_, gi) => gi)
      .filter((gi) => fits(groups[gi]!) && groups[gi]!.continuations.length > 0)
      .sort((a, b) => groups[b]!.context.length - groups[a]!.context.length || a - b);
    for (let start = 0; start < order.length; start += batchSize) {
      const batch = order.slice(start, start + batchSize);
      await this.scoreBatch(
        batch.map((gi) => groups[gi]!),
        batchSize,
        // Later, smaller batches keep the first one's size: one compiled shape per length, not per size too.
        Math.min(batchSize, order.length),
        (k, ci, r) => (results[batch[k]!]![ci] = r),
      );
    }
    return results;
  }

  /** Releases the ORT sessions. */
  async release(): Promise<void> {
    await this.cachedContextSession?.release();
    this.cachedContextSession = null;
    for (const s of this.continuationSessions.values()) await s.release();
    this.continuationSessions.clear();
  }

  private async scoreBatch(
    groups: readonly SharedContextRequest[],
    batchSize: number,
    minBatch: number,
    put: (group: number, continuation: number, r: ScoreResult) => void,
  ): Promise<void> {
    const model = this.model;
    const cfg = model.config;
    // Phase A: contexts left-padded to P, each ending at position P−1.
    const P = bucketLength(Math.max(...groups.map((g) => g.context.length)));
    const B = bucketBatch(Math.max(groups.length, minBatch));
    const ids = new BigInt64Array(B * P);
    const mask = new BigInt64Array(B * P);
    groups.forEach((g, b) => {
      const off = P - g.context.length;
      g.context.forEach((id, j) => {
        ids[b * P + off + j] = BigInt(id);
        mask[b * P + off + j] = 1n;
      });
    });
    for (let b = groups.length; b < B; b++) mask[b * P + P - 1] = 1n; // padding rows: one attended slot
    const aRows: number[] = [];
    const aTargets: number[] = [];
    groups.forEach((g, b) =>
      g.continuations.forEach((c) => {
        aRows.push(b * P + P - 1);
        aTargets.push(c[0]!);
      }),
    );
    const a = await runScoring(model, this.contextSession(), ids, mask, positionRange(0, P), aRows, aTargets);
    const aLogprob = a.logprob!.data as Float32Array;
    const aMax = a.max_logprob!.data as Float32Array;

    // Per row (group, continuation): the first token's score; the rest come from phase B.
    interface Row {
      group: number;
      ci: number;
      tokens: readonly number[];
      loglik: number;
      isGreedy: boolean;
    }
    const all: Row[] = [];
    let at = 0;
    groups.forEach((g, k) =>
      g.continuations.forEach((c, ci) => {
        all.push({ group: k, ci, tokens: c, loglik: aLogprob[at]!, isGreedy: aLogprob[at]! >= aMax[at]! });
        at++;
      }),
    );
    const more = all.filter((r) => r.tokens.length > 1);
    const keys = Array.from({ length: cfg.numLayers }, (_, l) => a[`present_key_${l}`]!.data as Float32Array);
    const values = Array.from(
      { length: cfg.numLayers },
      (_, l) => a[`present_value_${l}`]!.data as Float32Array,
    );
    for (let s = 0; s < more.length; s += batchSize) {
      await this.continue(
        more.slice(s, s + batchSize),
        groups,
        P,
        keys,
        values,
        Math.min(batchSize, more.length),
      );
    }
    for (const r of all)
      put(r.group, r.ci, { loglik: r.loglik, tokens: r.tokens.length, isGreedy: r.isGreedy });
  }

  /** Phase B for `rows`: continuation tokens after the first, against their context's keys/values. */
  private async continue(
    rows: { group: number; tokens: readonly number[]; loglik: number; isGreedy: boolean }[],
    groups: readonly SharedContextRequest[],
    P: number,
    keys: readonly Float32Array[],
    values: readonly Float32Array[],
    minBatch: number,
  ): Promise<void> {
    const model = this.model;
    const cfg = model.config;
    // Continuations are short (a word or a letter): powers of two from 1, not the ≥ 16 of bucketLength.
    const S = 2 ** Math.ceil(Math.log2(Math.max(...rows.map((r) => r.tokens.length - 1))));
    const N = bucketBatch(Math.max(rows.length, minBatch));
    const Hkv = cfg.numKvHeads;
    const D = cfg.headDim;
    const block = Hkv * P * D; // one row's keys (or values) of one layer
    const past: Record<string, Feed> = {};
    for (let l = 0; l < cfg.numLayers; l++) {
      const k = new Float32Array(N * block);
      const v = new Float32Array(N * block);
      rows.forEach((r, n) => {
        k.set(keys[l]!.subarray(r.group * block, (r.group + 1) * block), n * block);
        v.set(values[l]!.subarray(r.group * block, (r.group + 1) * block), n * block);
      });
      past[`past_key_${l}`] = { data: k, dims: [N, Hkv, P, D] };
      past[`past_value_${l}`] = { data: v, dims: [N, Hkv, P, D] };
    }
    const width = P + S;
    const ids = new BigInt64Array(N * S);
    const mask = new BigInt64Array(N * width);
    const scored: number[] = [];
    const targets: number[] = [];
    rows.forEach((r, n) => {
      const ctxLen = groups[r.group]!.context.length;
      for (let j = P - ctxLen; j < P; j++) mask[n * width + j] = 1n;
      for (let j = 0; j < r.tokens.length - 1; j++) {
        ids[n * S + j] = BigInt(r.tokens[j]!);
        mask[n * width + P + j] = 1n;
        scored.push(n * S + j);
        targets.push(r.tokens[j + 1]!);
      }
    });
    for (let n = rows.length; n < N; n++) mask[n * width + P] = 1n; // padding rows: one attended slot
    const out = await runScoring(
      model,
      this.continuationSession(P, S),
      ids,
      mask,
      positionRange(P, S),
      scored,
      targets,
      past,
    );
    const logprob = out.logprob!.data as Float32Array;
    const maxLogprob = out.max_logprob!.data as Float32Array;
    let at = 0;
    for (const r of rows) {
      for (let j = 1; j < r.tokens.length; j++, at++) {
        r.loglik += logprob[at]!;
        // The picked value is the same float as its entry in the log-softmax, so equality is exact.
        if (logprob[at]! < maxLogprob[at]!) r.isGreedy = false;
      }
    }
  }

  private contextSession(): Session {
    if (this.cachedContextSession) return this.cachedContextSession;
    const model = this.model;
    const g = new Graph('llama-shared-context');
    const llama = buildLlamaGraph(g, model.config, model.weights, { hooks: model.options.hooks });
    const outputs: Record<string, Tensor> = {
      ...addScoringHead(g, llama),
      ...Object.fromEntries(llama.presentKeys.map((t, i) => [`present_key_${i}`, t])),
      ...Object.fromEntries(llama.presentValues.map((t, i) => [`present_value_${i}`, t])),
    };
    this.cachedContextSession = sessionOver(model, g, outputs);
    return this.cachedContextSession;
  }

  private continuationSession(capacity: number, seq: number): Session {
    const key = `${capacity}x${seq}`;
    const found = this.continuationSessions.get(key);
    if (found) return found;
    const model = this.model;
    const g = new Graph(`llama-continuations-${key}`);
    const llama = buildLlamaGraph(g, model.config, model.weights, {
      hooks: model.options.hooks,
      cache: { capacity, seq },
    });
    const session = sessionOver(model, g, addScoringHead(g, llama));
    this.continuationSessions.set(key, session);
    return session;
  }
}

/** One-shot form of `SharedContextScorer.score` (its sessions are released before it returns). */
export async function scoreSharedContexts(
  model: LlamaModel,
  groups: readonly SharedContextRequest[],
  opts: ScoreOptions = {},
): Promise<ScoreResult[][]> {
  const scorer = new SharedContextScorer(model);
  try {
    return await scorer.score(groups, opts);
  } finally {
    await scorer.release();
  }
}
