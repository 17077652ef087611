/**
 * The LLaMA-family decoder as an engine graph (Hugging Face `LlamaForCausalLM` semantics):
 *
 *   x = embed_tokens[input_ids]
 *   per layer:  h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   with n = rmsnorm(x)
 *               x = h + down_proj(silu(gate_proj(m)) ⊙ up_proj(m))                      with m = rmsnorm(h)
 *   hidden = rmsnorm(x);  logits = hidden · lm_headᵀ  (embed_tokens when the embeddings are tied)
 *
 * Attention is causal with grouped-query heads (query head h reads key/value head ⌊h / (heads/kv_heads)⌋) and an
 * additive padding mask built from a 0/1 `attention_mask`. RoPE is HF's rotate_half form with cos/sin tables fed as
 * inputs (`rope-frequencies.ts` computes them from the positions), so one graph serves any position offset.
 *
 * Graph inputs (by name):
 *   input_ids       int64   [batch, seq]
 *   attention_mask  int64   [batch, keys]  1 = attend, 0 = padding; keys = seq, or capacity + seq with a cache
 *   rope_cos/sin    float32 [seq, head_dim/2] for the positions of the `seq` tokens
 *   past_key_i, past_value_i  float32 [batch, kv_heads, capacity, head_dim]  (only with `cache`)
 *
 * With `cache`, the keys/values of `capacity` earlier positions come in as inputs and are attended before the new
 * ones (query i sees every past slot the mask allows and new keys j ≤ i). The graph returns the keys/values of
 * the new tokens only (`presentKeys/Values`, RoPE applied): the caller stores them, so nothing of the prefix is
 * recomputed. Shapes must then be numbers (ORT plans memory per static shape; the capacity is fixed per graph).
 */
import {
  GraphError,
  MASKED_SCORE,
  add,
  attention,
  cast,
  concat,
  gather,
  linear,
  mul,
  reshape,
  rmsNorm,
  rope,
  silu,
  sub,
  transpose,
  type Dim,
  type Graph,
  type Tensor,
} from '../engine/index.ts';
import {
  PROJECTION_NAMES,
  projectionShapes,
  projectionWeightName,
  type LlamaConfig,
  type ProjectionName,
} from './config.ts';
import type { WeightSource } from './model-weights.ts';
import { buildProjection, type ProjectionHooks } from './projection.ts';

export interface LlamaGraphOptions {
  hooks?: ProjectionHooks;
  /** Decode against a key/value cache: `capacity` past slots, `seq` new tokens per run (see the module comment). */
  cache?: { capacity: number; seq: number };
  /** Batch size as a number, or the named dimension (default "batch"). */
  batch?: Dim;
  /** Sequence length as a number, or the named dimension (default "seq"; ignored with a cache). */
  seq?: Dim;
  /**
   * RoPE tables computed inside the graph instead of fed as inputs (ONNX export: the caller gathers them from
   * constant tables by position). Each is [seq, head_dim/2].
   */
  rope?: { cos: Tensor; sin: Tensor };
  /**
   * Compute dtype of activations (default float32). With float16 the float32 weights are cast where they are
   * used (ORT folds the casts into float16 initializers), the mask and RoPE tables are cast, and the logits
   * come out float16: compute the loss on them cast to float32.
   */
  dtype?: 'float32' | 'float16';
}

export interface LlamaGraphInputs {
  inputIds: Tensor;
  attentionMask: Tensor;
  ropeCos: Tensor;
  ropeSin: Tensor;
  pastKeys: Tensor[];
  pastValues: Tensor[];
}

export interface LlamaGraph {
  graph: Graph;
  config: LlamaConfig;
  inputs: LlamaGraphInputs;
  /** Final-normed hidden states [batch, seq, hidden]. */
  hidden: Tensor;
  /** Keys (after RoPE) and values of the input tokens, per layer: [batch, kv_heads, seq, head_dim]. */
  presentKeys: Tensor[];
  presentValues: Tensor[];
  /** The input of each decoder layer [batch, seq, hidden] (layerInputs[0] is the embedding output). */
  layerInputs: Tensor[];
  /** The last decoder layer's output, before the final norm. */
  lastLayerOutput: Tensor;
  /**
   * Builds one more copy of decoder layer `i` on `x` (same weights and hooks): what recomputation in the
   * backward (llama-step-program.ts) runs instead of keeping every layer's activations.
   */
  layer: (i: number, x: Tensor) => Tensor;
  /** The LM head: [..., hidden] → [..., vocab]. */
  lmHead: (h: Tensor) => Tensor;
  /** Logits of every position: [batch, seq, vocab]. */
  logits: () => Tensor;
}

/** The weights of `source`, cast to `dtype` where a graph uses them (one cast per weight and graph). */
function castingWeights(source: WeightSource, dtype: 'float16'): WeightSource {
  const perGraph = new WeakMap<Graph, Map<string, Tensor>>();
  return {
    has: (name) => source.has(name),
    tensor(graph, name) {
      let m = perGraph.get(graph);
      if (!m) perGraph.set(graph, (m = new Map()));
      let t = m.get(name);
      if (!t) m.set(name, (t = cast(source.tensor(graph, name), dtype)));
      return t;
    },
  };
}

export const EMBED_WEIGHT = 'model.embed_tokens.weight';
export const FINAL_NORM_WEIGHT = 'model.norm.weight';
export const LM_HEAD_WEIGHT = 'lm_head.weight';

/** Builds the decoder in `graph`; see the module comment. */
export function buildLlamaGraph(
  graph: Graph,
  cfg: LlamaConfig,
  weights: WeightSource,
  opts: LlamaGraphOptions = {},
): LlamaGraph {
  const hooks = opts.hooks ?? {};
  const B: Dim = opts.batch ?? 'batch';
  const cache = opts.cache;
  if (
    cache &&
    (!Number.isInteger(cache.capacity) || cache.capacity < 1 || !Number.isInteger(cache.seq) || cache.seq < 1)
  ) {
    throw new GraphError(`cache capacity and seq must be positive integers, got ${JSON.stringify(cache)}`);
  }
  const S: Dim = cache ? cache.seq : (opts.seq ?? 'seq');
  const dt = opts.dtype ?? 'float32';
  if (dt !== 'float32' && cache) throw new GraphError('a key/value cache needs float32 activations');
  const toDt = (t: Tensor) => (t.dtype === dt ? t : cast(t, dt));
  weights = dt === 'float32' ? weights : castingWeights(weights, dt);
  const keys: Dim = cache ? cache.capacity + cache.seq : S;
  const D = cfg.headDim;
  const Hq = cfg.numHeads;
  const Hkv = cfg.numKvHeads;

  const inputs: LlamaGraphInputs = {
    inputIds: graph.input('input_ids', 'int64', [B, S]),
    attentionMask: graph.input('attention_mask', 'int64', [B, keys]),
    ropeCos: opts.rope?.cos ?? graph.input('rope_cos', 'float32', [S, D / 2]),
    ropeSin: opts.rope?.sin ?? graph.input('rope_sin', 'float32', [S, D / 2]),
    pastKeys: [],
    pastValues: [],
  };
  if (cache) {
    for (let i = 0; i < cfg.numLayers; i++) {
      inputs.pastKeys.push(graph.input(`past_key_${i}`, 'float32', [B, Hkv, cache.capacity, D]));
      inputs.pastValues.push(graph.input(`past_value_${i}`, 'float32', [B, Hkv, cache.capacity, D]));
    }
  }

  // 0/1 mask → additive [batch, 1, 1, keys]: (m − 1)·1e9 is 0 where attended and −1e9 on padding.
  const maskAdd = toDt(
    reshape(mul(sub(cast(inputs.attentionMask, 'float32'), 1), -MASKED_SCORE), [B, 1, 1, keys]),
  );
  const ropeCos = toDt(inputs.ropeCos);
  const ropeSin = toDt(inputs.ropeSin);

  const embed = weights.tensor(graph, EMBED_WEIGHT);
  let x = gather(embed, inputs.inputIds); // [B, S, hidden]
  const shapes = projectionShapes(cfg);
  const presentKeys: Tensor[] = [];
  const presentValues: Tensor[] = [];
  const proj = (layer: number, name: ProjectionName) =>
    buildProjection(
      graph,
      {
        layer,
        proj: name,
        weightName: projectionWeightName(layer, name),
        outFeatures: shapes[name].out,
        inFeatures: shapes[name].in,
      },
      weights,
      hooks,
    );
  // [B, S, heads·D] → [B, heads, S, D]
  const heads = (t: Tensor, n: number) => transpose(reshape(t, [B, S, n, D]), [0, 2, 1, 3]);

  /** Decoder layer i on x; records its keys/values when `present` is given. */
  const decoderLayer = (i: number, x: Tensor, present?: { keys: Tensor[]; values: Tensor[] }): Tensor => {
    const p = Object.fromEntries(PROJECTION_NAMES.map((name) => [name, proj(i, name)])) as Record<
      ProjectionName,
      (t: Tensor) => Tensor
    >;
    const n = rmsNorm(x, weights.tensor(graph, `model.layers.${i}.input_layernorm.weight`), cfg.rmsNormEps);
    const q = rope(heads(p.q_proj(n), Hq), ropeCos, ropeSin);
    const k = rope(heads(p.k_proj(n), Hkv), ropeCos, ropeSin);
    const v = heads(p.v_proj(n), Hkv);
    present?.keys.push(k);
    present?.values.push(v);
    const kAll = cache ? concat([inputs.pastKeys[i]!, k], 2) : k;
    const vAll = cache ? concat([inputs.pastValues[i]!, v], 2) : v;
    const a = attention(q, kAll, vAll, { causal: true, mask: maskAdd }); // [B, Hq, S, D]
    const merged = reshape(transpose(a, [0, 2, 1, 3]), [B, S, Hq * D]);
    const h = add(x, p.o_proj(merged));
    const m = rmsNorm(
      h,
      weights.tensor(graph, `model.layers.${i}.post_attention_layernorm.weight`),
      cfg.rmsNormEps,
    );
    return add(h, p.down_proj(mul(silu(p.gate_proj(m)), p.up_proj(m))));
  };
  const layerInputs: Tensor[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    layerInputs.push(x);
    x = decoderLayer(i, x, { keys: presentKeys, values: presentValues });
  }
  const lastLayerOutput = x;
  const hidden = rmsNorm(x, weights.tensor(graph, FINAL_NORM_WEIGHT), cfg.rmsNormEps);
  const head = cfg.tieWordEmbeddings ? embed : weights.tensor(graph, LM_HEAD_WEIGHT);
  const lmHead = (h: Tensor) => linear(h, head);
  let logits: Tensor | null = null;
  return {
    graph,
    config: cfg,
    inputs,
    hidden,
    presentKeys,
    presentValues,
    layerInputs,
    lastLayerOutput,
    layer: (i, input) => decoderLayer(i, input),
    lmHead,
    logits: () => (logits ??= lmHead(hidden)),
  };
}
