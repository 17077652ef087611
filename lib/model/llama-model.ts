/**
 * A loaded LLaMA-family model: checkpoint + float32 weights + the graphs and ONNX Runtime sessions that run it.
 *
 * One main graph (`buildLlamaGraph`, batch and sequence length named) carries every head the runs need; each
 * kind of run is a Session over it that asks only for its outputs:
 *   - logits:  all positions' logits [batch, seq, vocab] (tests, small inputs);
 *   - score:   for chosen (row, target) pairs, log p(target) and the row's largest log-probability, computed in
 *              the graph so only two numbers per scored token leave ORT (a 128k vocabulary × every position
 *              would be gigabytes);
 *   - prefill: logits of chosen rows plus every layer's keys/values, to start a key/value cache;
 *   - last:    logits of chosen rows only (decoding without a cache).
 * Decode graphs (one new token against a cache of fixed capacity) are built per capacity.
 *
 * Sequences are right-padded to a few bucketed lengths and batch sizes: the engine compiles one ORT session per
 * distinct input shape, so bucketing bounds how many are compiled (and kept) over a run. Right padding never
 * changes a real position's result: attention is causal, so real tokens never see the padding after them.
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
  type ProviderChoice,
  type SessionOptions,
  type Tensor,
} from '../engine/index.ts';
import { UserError } from '../errors.ts';
import { openCheckpoint, type Checkpoint } from './checkpoint.ts';
import type { LlamaConfig } from './config.ts';
import { KvCache } from './kv-cache.ts';
import { buildLlamaGraph, type LlamaGraph } from './llama-graph.ts';
import { loadModelWeights, type ModelWeightsOptions, type WeightSource } from './model-weights.ts';
import type { ProjectionHooks } from './projection.ts';
import { RopeTableCache, ropeCosSin, ropeInverseFrequencies } from './rope-frequencies.ts';
import type { Tokenizer } from './tokenizer.ts';

export interface LoadModelOptions {
  /** Projection hooks (quantized base weights, adapters); see projection.ts. */
  hooks?: ProjectionHooks;
  /** Values for graph inputs the hooks create (e.g. adapter factors), fed to every run. */
  feeds?: Readonly<Record<string, Feed>>;
  /** Execution provider (default cpu). */
  provider?: ProviderChoice;
  /** ORT intra-op threads (default: ORT's choice). */
  intraOpThreads?: number;
  /** Which weights to load and where converted ones go; see model-weights.ts. */
  weights?: ModelWeightsOptions;
  /**
   * Weights go to ONNX external data (referenced in place, mapped by ORT) when their total passes this many bytes
   * (default 256 MiB); below, they are copied into the in-memory model.
   */
  externalDataTotalBytes?: number;
  /** Let NF4 products with few rows (generation) use moka's native kernel (default: when built; see Session). */
  nativeKernels?: boolean;
}

/** Sequences padded to one length: what a graph run is fed. */
export interface PaddedBatch {
  /** Rows actually used (the rest, up to `batch`, are padding rows). */
  rows: number;
  batch: number;
  seq: number;
  ids: BigInt64Array;
  mask: BigInt64Array;
}

const DEFAULT_EXTERNAL_BYTES = 256 * 2 ** 20;

/** Padded sequence length: powers of two from 16 to 256, then multiples of 256 (≤ 2x waste, few shapes). */
export function bucketLength(n: number): number {
  if (n <= 16) return 16;
  if (n <= 256) return 2 ** Math.ceil(Math.log2(n));
  return Math.ceil(n / 256) * 256;
}

/** Padded batch size: the next power of two. */
export function bucketBatch(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

/** Graph inputs the given outputs depend on (a session must be fed exactly these). */
function liveInputs(outputs: readonly Tensor[]): Tensor[] {
  const seen = new Set<number>();
  const found = new Map<number, Tensor>();
  const stack = [...outputs];
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t.id)) continue;
    seen.add(t.id);
    if (t.kind === 'input') found.set(t.id, t);
    if (t.producer) stack.push(...t.producer.inputs);
  }
  return [...found.values()].sort((a, b) => a.id - b.id);
}

interface MainGraph {
  llama: LlamaGraph;
  rows: Tensor;
  targets: Tensor;
  outputs: {
    logits: Tensor;
    rowLogits: Tensor;
    logprob: Tensor;
    maxLogprob: Tensor;
  };
}

type RunKind = 'logits' | 'score' | 'prefill' | 'last';

export class LlamaModel {
  readonly invFreq: Float32Array;
  private main: MainGraph | null = null;
  private readonly sessions = new Map<RunKind, Session>();
  private readonly decodeSessions = new Map<number, Session>();
  private tokenizerCache: Tokenizer | null = null;
  private readonly ropeTables: RopeTableCache;

  private constructor(
    readonly config: LlamaConfig,
    readonly weights: WeightSource,
    readonly checkpoint: Checkpoint | null,
    readonly options: LoadModelOptions,
  ) {
    this.invFreq = ropeInverseFrequencies(config);
    this.ropeTables = new RopeTableCache(this.invFreq);
  }

  /** Opens a HF checkpoint directory and prepares its weights (see model-weights.ts for the memory behaviour). */
  static async load(dir: string, opts: LoadModelOptions = {}): Promise<LlamaModel> {
    const ckpt = await openCheckpoint(dir);
    try {
      return await LlamaModel.fromCheckpoint(ckpt, opts);
    } catch (err) {
      await ckpt.close();
      throw err;
    }
  }

  /** A model over an open checkpoint; `close()` closes the checkpoint too. */
  static async fromCheckpoint(ckpt: Checkpoint, opts: LoadModelOptions = {}): Promise<LlamaModel> {
    const weights = await loadModelWeights(ckpt, opts.weights);
    return new LlamaModel(ckpt.config, weights, ckpt, opts);
  }

  /**
   * A model over a checkpoint whose weights were prepared elsewhere (e.g. a 4-bit base, whose projections come
   * through `opts.hooks.base`); `close()` disposes the weights and closes the checkpoint.
   */
  static fromParts(ckpt: Checkpoint, weights: WeightSource, opts: LoadModelOptions = {}): LlamaModel {
    return new LlamaModel(ckpt.config, weights, ckpt, opts);
  }

  /** A model over weights from elsewhere (tests, in-memory variants); it has no tokenizer. */
  static fromWeights(config: LlamaConfig, weights: WeightSource, opts: LoadModelOptions = {}): LlamaModel {
    return new LlamaModel(config, weights, null, opts);
  }

  /** The checkpoint's tokenizer (a UserError when the model has none). */
  tokenizer(): Tokenizer {
    if (this.tokenizerCache) return this.tokenizerCache;
    if (!this.checkpoint) throw new UserError('this model was built from weights alone and has no tokenizer');
    this.tokenizerCache = this.checkpoint.tokenizer();
    return this.tokenizerCache;
  }

  /** Ids that end a generation: the tokenizer's (config.json, generation_config.json) or config.json's. */
  eosIds(): number[] {
    if (this.checkpoint?.tokenizerJson) return this.tokenizer().eosIds;
    return this.config.eosTokenIds;
  }

  /** Right-pads sequences into a batch of bucketed shape (padding id 0, mask 0). */
  padBatch(sequences: readonly (readonly number[])[], minBatch = 1): PaddedBatch {
    if (sequences.length === 0) throw new UserError('no sequences to run');
    const longest = Math.max(...sequences.map((s) => s.length));
    if (longest === 0) throw new UserError('a sequence to run is empty');
    const seq = bucketLength(longest);
    const batch = bucketBatch(Math.max(minBatch, sequences.length));
    const ids = new BigInt64Array(batch * seq);
    const mask = new BigInt64Array(batch * seq);
    sequences.forEach((s, b) => {
      s.forEach((id, j) => {
        this.checkToken(id);
        ids[b * seq + j] = BigInt(id);
        mask[b * seq + j] = 1n;
      });
    });
    // Padding rows attend to their first slot, so no softmax row is all padding.
    for (let b = sequences.length; b < batch; b++) mask[b * seq] = 1n;
    return { rows: sequences.length, batch, seq, ids, mask };
  }

  /** Logits of every position of each sequence: one Float32Array [length, vocab] per sequence. */
  async logits(sequences: readonly (readonly number[])[]): Promise<Float32Array[]> {
    const p = this.padBatch(sequences);
    const out = await this.run('logits', this.batchFeeds(p));
    const all = out.logits as Float32Array;
    const V = this.config.vocabSize;
    return sequences.map((s, b) => all.slice(b * p.seq * V, (b * p.seq + s.length) * V));
  }

  /**
   * For each (row, target): log p(target) at flat position `rows[i]` (= batch row · seq + position) and the largest
   * log-probability there (the target is the greedy choice when they are equal).
   */
  async scoreRows(
    p: PaddedBatch,
    rows: readonly number[],
    targets: readonly number[],
  ): Promise<{ logprob: Float32Array; maxLogprob: Float32Array }> {
    const n = bucketLength(rows.length);
    const rowIdx = new BigInt64Array(n);
    const tgt = new BigInt64Array(n);
    rows.forEach((r, i) => {
      this.checkToken(targets[i]!);
      rowIdx[i] = BigInt(r);
      tgt[i] = BigInt(targets[i]!);
    });
    const out = await this.run('score', {
      ...this.batchFeeds(p),
      rows: { data: rowIdx, dims: [n] },
      targets: { data: tgt, dims: [n] },
    });
    return {
      logprob: (out.logprob as Float32Array).subarray(0, rows.length),
      maxLogprob: (out.max_logprob as Float32Array).subarray(0, rows.length),
    };
  }

  /** Logits [vocab] after the last token of `ids`, recomputing the whole sequence (no cache). */
  async lastLogits(ids: readonly number[]): Promise<Float32Array> {
    const p = this.padBatch([ids]);
    const out = await this.run('last', {
      ...this.batchFeeds(p),
      rows: { data: BigInt64Array.of(BigInt(ids.length - 1)), dims: [1] },
    });
    return out.logits as Float32Array;
  }

  /** A cache for one sequence of up to `capacity` positions (bucketed). */
  newCache(capacity: number): KvCache {
    const c = this.config;
    return new KvCache(c.numLayers, c.numKvHeads, c.headDim, bucketLength(capacity));
  }

  /** Runs `ids` from position 0, fills `cache` with their keys/values, returns the logits [vocab] after the last. */
  async prefill(ids: readonly number[], cache: KvCache): Promise<Float32Array> {
    if (ids.length > cache.capacity) {
      throw new RangeError(`prefill: ${ids.length} tokens exceed the cache capacity ${cache.capacity}`);
    }
    const p = this.padBatch([ids]);
    const out = await this.run('prefill', {
      ...this.batchFeeds(p),
      rows: { data: BigInt64Array.of(BigInt(ids.length - 1)), dims: [1] },
    });
    const L = this.config.numLayers;
    const keys = Array.from({ length: L }, (_, i) => out[`present_key_${i}`] as Float32Array);
    const values = Array.from({ length: L }, (_, i) => out[`present_value_${i}`] as Float32Array);
    cache.length = 0;
    cache.write(keys, values, p.seq, ids.length, 0);
    return out.logits as Float32Array;
  }

  /** Feeds one token at position `cache.length`, stores its keys/values, returns the logits [vocab] after it. */
  async decodeStep(token: number, cache: KvCache): Promise<Float32Array> {
    if (cache.length >= cache.capacity) throw new RangeError(`decode: the cache is full (${cache.capacity})`);
    this.checkToken(token);
    const session = this.decodeSession(cache.capacity);
    const { cos, sin } = ropeCosSin(this.invFreq, [cache.length]);
    const half = this.config.headDim / 2;
    const out = await session.run({
      ...this.options.feeds,
      ...cache.feeds(),
      input_ids: { data: BigInt64Array.of(BigInt(token)), dims: [1, 1] },
      attention_mask: { data: cache.attentionMask(1), dims: [1, cache.capacity + 1] },
      rope_cos: { data: cos, dims: [1, half] },
      rope_sin: { data: sin, dims: [1, half] },
    });
    const L = this.config.numLayers;
    cache.write(
      Array.from({ length: L }, (_, i) => out[`present_key_${i}`]!.data as Float32Array),
      Array.from({ length: L }, (_, i) => out[`present_value_${i}`]!.data as Float32Array),
      1,
      1,
      cache.length,
    );
    return out.logits!.data as Float32Array;
  }

  /** Releases every ORT session, then the weights' temporary files and the checkpoint's file handles. */
  async close(): Promise<void> {
    for (const s of [...this.sessions.values(), ...this.decodeSessions.values()]) await s.release();
    this.sessions.clear();
    this.decodeSessions.clear();
    this.weights.dispose?.();
    await this.checkpoint?.close();
  }

  private checkToken(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
      throw new UserError(`token id ${id} is outside the model's vocabulary [0, ${this.config.vocabSize})`);
    }
  }

  /** Feeds of the main graph for a padded batch: ids, mask, and RoPE tables for positions 0..seq−1. */
  batchFeeds(p: PaddedBatch): Record<string, Feed> {
    const { cos, sin } = this.ropeTables.get(p.seq);
    const half = this.config.headDim / 2;
    return {
      input_ids: { data: p.ids, dims: [p.batch, p.seq] },
      attention_mask: { data: p.mask, dims: [p.batch, p.seq] },
      rope_cos: { data: cos, dims: [p.seq, half] },
      rope_sin: { data: sin, dims: [p.seq, half] },
    };
  }

  /** The engine session settings of this model's graphs (also used by graphs built beside it, e.g. shared-context scoring). */
  sessionOptions(): SessionOptions {
    return {
      provider: this.options.provider,
      intraOpThreads: this.options.intraOpThreads,
      externalDataTotalBytes: this.options.externalDataTotalBytes ?? DEFAULT_EXTERNAL_BYTES,
      nativeKernels: this.options.nativeKernels,
    };
  }

  private async run(kind: RunKind, feeds: Record<string, Feed>): Promise<Record<string, Float32Array>> {
    const out = await this.session(kind).run({ ...this.options.feeds, ...feeds });
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  }

  private mainGraph(): MainGraph {
    if (this.main) return this.main;
    const g = new Graph('llama');
    const llama = buildLlamaGraph(g, this.config, this.weights, { hooks: this.options.hooks });
    const rows = g.input('rows', 'int64', ['rows']);
    const targets = g.input('targets', 'int64', ['rows']);
    const H = this.config.hiddenSize;
    const V = this.config.vocabSize;
    const flat = reshape(llama.hidden, ['batch*seq', H]);
    const rowLogits = llama.lmHead(gather(flat, rows)); // [rows, vocab]
    const logp = logSoftmax(rowLogits, -1);
    // log p(target) as a masked sum: (target == 0..V−1) selects one entry, and 0·x adds exactly 0.
    const vocabIds = g.constant(
      'int64',
      [V],
      BigInt64Array.from({ length: V }, (_, i) => BigInt(i)),
    );
    const onehot = cast(equal(unsqueeze(targets, -1), vocabIds), 'float32');
    const logprob = reduceSum(mul(onehot, logp), -1);
    const maxLogprob = reduceMax(logp, -1);
    this.main = { llama, rows, targets, outputs: { logits: llama.logits(), rowLogits, logprob, maxLogprob } };
    return this.main;
  }

  private session(kind: RunKind): Session {
    let s = this.sessions.get(kind);
    if (s) return s;
    const m = this.mainGraph();
    const o = m.outputs;
    const outputs: Record<string, Tensor> =
      kind === 'logits'
        ? { logits: o.logits }
        : kind === 'score'
          ? { logprob: o.logprob, max_logprob: o.maxLogprob }
          : kind === 'last'
            ? { logits: o.rowLogits }
            : {
                logits: o.rowLogits,
                ...Object.fromEntries(m.llama.presentKeys.map((t, i) => [`present_key_${i}`, t])),
                ...Object.fromEntries(m.llama.presentValues.map((t, i) => [`present_value_${i}`, t])),
              };
    s = new Session(
      m.llama.graph,
      { inputs: liveInputs(Object.values(outputs)), outputs },
      this.sessionOptions(),
    );
    this.sessions.set(kind, s);
    return s;
  }

  private decodeSession(capacity: number): Session {
    let s = this.decodeSessions.get(capacity);
    if (s) return s;
    const g = new Graph(`llama-decode-${capacity}`);
    const llama = buildLlamaGraph(g, this.config, this.weights, {
      hooks: this.options.hooks,
      cache: { capacity, seq: 1 },
    });
    const outputs: Record<string, Tensor> = {
      logits: reshape(llama.logits(), ['batch', this.config.vocabSize]),
      ...Object.fromEntries(llama.presentKeys.map((t, i) => [`present_key_${i}`, t])),
      ...Object.fromEntries(llama.presentValues.map((t, i) => [`present_value_${i}`, t])),
    };
    s = new Session(g, { inputs: liveInputs(Object.values(outputs)), outputs }, this.sessionOptions());
    this.decodeSessions.set(capacity, s);
    return s;
  }
}
