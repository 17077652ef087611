/**
 * The step program of a LLaMA-family model with an adapter: one graph that computes the summed token loss of a
 * micro-batch and the gradient of that sum for every adapter tensor, run by ONNX Runtime once per micro-batch.
 *
 * The frozen model comes from `buildLlamaGraph` (float32 checkpoint weights by default; a `base` projection hook
 * swaps in e.g. 4-bit weights), the adapter from `AdapterRuntime.bind` (its tensors become graph inputs and its
 * `wrap` adds the update to each targeted projection through the fused formulation). Nothing about the base model
 * is differentiated: `grad` only walks paths from the adapter inputs to the loss.
 *
 * Batches: right-padded rows with shifted labels (see step-program.ts); positions 0…S−1 per row, so packed
 * batches are not supported here (the graph takes one RoPE table per sequence, not per row, and no segment mask).
 */
import {
  Graph,
  GraphError,
  Session,
  after,
  cast,
  crossEntropy,
  grad,
  type Feed,
  type ProviderChoice,
  type Tensor,
} from '../engine/index.ts';
import { UserError } from '../errors.ts';
import type { AdapterRuntime } from '../adapters/adapter-runtime.ts';
import type { LlamaConfig } from '../model/config.ts';
import { buildLlamaGraph, type LlamaGraph } from '../model/llama-graph.ts';
import type { WeightSource } from '../model/model-weights.ts';
import type { ProjectionHooks } from '../model/projection.ts';
import { RopeTableCache, ropeInverseFrequencies } from '../model/rope-frequencies.ts';
import { countTargets, type StepProgram, type TokenBatch, type TrainableSpec } from './step-program.ts';

export interface LlamaStepProgramOptions {
  config: LlamaConfig;
  weights: WeightSource;
  adapter: AdapterRuntime;
  /** Frozen base projections (e.g. the quantized path); default: the float32 weights of `weights`. */
  base?: ProjectionHooks['base'];
  /** Start from these adapter values instead of the adapter's initialisation (e.g. a saved adapter). */
  initialValues?: ReadonlyMap<string, Float32Array>;
  provider?: ProviderChoice;
  /** ORT intra-op threads; 1 makes CPU runs bit-reproducible. */
  intraOpThreads?: number;
  /** Weights go to ONNX external data above this many bytes (default 256 MiB, as the model's own sessions). */
  externalDataTotalBytes?: number;
  /**
   * 'fp16': float16 activations (weights cast to float16 in the graph, the loss computed in float32), float32
   * adapter master weights and gradients. Default 'fp32'.
   */
  precision?: 'fp32' | 'fp16';
  /**
   * fp16 only: the loss is multiplied by this before the backward and the gradients divided by it after, so
   * small gradients do not underflow float16 (static loss scaling; default 1024).
   */
  lossScale?: number;
  /**
   * Recompute each decoder layer's forward in the backward (activation checkpointing at layer boundaries):
   * only the layers' inputs are kept between the forward and the backward, so activation memory no longer
   * grows with depth × the adapter's intermediates (MoKA keeps several per projection and token), at the cost
   * of one more forward. Gradients are the same up to float rounding. Default: on at real widths (hidden size
   * ≥ 1024), where activations dominate memory; off for toy models, where the extra forward costs more time than
   * the memory it saves.
   */
  recompute?: boolean;
  /** Write ORT's optimised training graph here (tests inspect what ORT made of it). */
  optimizedModelPath?: string;
}

const LAYER = /^model\.layers\.(\d+)\./;

/**
 * d(loss)/d(wrt) with each decoder layer recomputed where its gradient is needed. The gradient reaches the
 * last layer's output through the head; then, from the last layer down, the layer is rebuilt on its saved
 * input, made to wait for that gradient (`after`: otherwise ONNX Runtime may run the copy right after the
 * forward and keep its activations alive, which is what this avoids), and differentiated with the gradient
 * as seed. Every tensor in `wrt` must belong to one layer (named `model.layers.<i>.…`); null when one does
 * not (the caller then differentiates the whole graph).
 */
function recomputedGrads(
  llama: LlamaGraph,
  loss: Tensor,
  wrt: readonly Tensor[],
  seed?: Tensor,
): Tensor[] | null {
  const byLayer = new Map<number, number[]>();
  for (const [j, t] of wrt.entries()) {
    const m = LAYER.exec(t.name ?? '');
    if (!m) return null;
    const layer = Number(m[1]);
    if (!byLayer.has(layer)) byLayer.set(layer, []);
    byLayer.get(layer)!.push(j);
  }
  const out: (Tensor | null)[] = wrt.map(() => null);
  let g = grad(loss, [llama.lastLayerOutput], seed ? { seed } : {})[0]!;
  // The loss itself first: ORT otherwise computes it (a log-softmax over the vocabulary) at the very end of
  // the step, keeping the logits (B·S × vocab floats, 62.5 MB at 512 tokens of LLaMA-2) alive through the
  // whole backward.
  let finished: Tensor[] = [loss];
  for (let i = llama.config.numLayers - 1; i >= 0; i--) {
    const own = byLayer.get(i) ?? [];
    // Wait for the gradient and for the layer above's parameter gradients, so none of its recomputed
    // activations outlive its backward.
    const x = after(llama.layerInputs[i]!, [g, ...finished]);
    const y = llama.layer(i, x);
    const targets = [...(i > 0 ? [x] : []), ...own.map((j) => wrt[j]!)];
    if (targets.length === 0) break;
    const grads = grad(y, targets, { seed: g });
    own.forEach((j, n) => (out[j] = grads[n + (i > 0 ? 1 : 0)]!));
    finished = own.map((j) => out[j]!);
    if (i > 0) g = grads[0]!;
  }
  if (out.some((t) => t === null)) throw new GraphError('recompute: a trainable tensor has no gradient');
  return out as Tensor[];
}

/**
 * Per-layer MoKA/MoKAs gate values for the metrics log: α = softmax(gate logits) of every static gate of the
 * layer, averaged over the layer's adapted projections (they share the component count under the default plan;
 * projections with another count are left out of the average). Token gates (a projection of x) have no
 * per-layer value and are not reported.
 */
export function gateMetrics(
  specs: readonly TrainableSpec[],
  params: ReadonlyMap<string, Float32Array>,
): Record<string, number[]> {
  const perLayer = new Map<number, { sum: Float64Array; n: number }>();
  for (const s of specs) {
    if (s.group !== 'gate' || s.shape.length !== 1) continue;
    const layer = LAYER.exec(s.name);
    if (!layer) continue;
    const g = params.get(s.name)!;
    let max = -Infinity;
    for (const x of g) max = Math.max(max, x);
    let z = 0;
    for (const x of g) z += Math.exp(x - max);
    const key = Number(layer[1]);
    let acc = perLayer.get(key);
    if (!acc) perLayer.set(key, (acc = { sum: new Float64Array(g.length), n: 0 }));
    if (acc.sum.length !== g.length) continue;
    for (let i = 0; i < g.length; i++) acc.sum[i]! += Math.exp(g[i]! - max) / z;
    acc.n++;
  }
  const out: Record<string, number[]> = {};
  for (const [layer, { sum, n }] of [...perLayer].sort((a, b) => a[0] - b[0])) {
    out[`gate.layer${layer}`] = Array.from(sum, (x) => x / n);
  }
  return out;
}

export function createLlamaStepProgram(opts: LlamaStepProgramOptions): StepProgram {
  const { config, adapter } = opts;
  // The loss graph. With adapter dropout the training graph takes a per-micro-batch seed and evaluation gets
  // its own graph without dropout (eval mode); otherwise one graph serves both.
  const dropout = adapter.config.dropout > 0;
  const fp16 = opts.precision === 'fp16';
  const lossScale = fp16 ? (opts.lossScale ?? 1024) : 1;
  if (!(lossScale > 0 && Number.isFinite(lossScale))) {
    throw new UserError(`lossScale must be a positive number, got ${opts.lossScale}`);
  }
  const lossGraph = (withDropout: boolean) => {
    const g = new Graph(withDropout ? 'llama-train' : 'llama-eval');
    const seed = withDropout ? g.input('dropout_seed', 'int64', []) : undefined;
    const bound = adapter.bind(g, 'float32', { dropoutSeed: seed });
    const llama = buildLlamaGraph(g, config, opts.weights, {
      hooks: { ...(opts.base ? { base: opts.base } : {}), wrap: bound.wrap },
      dtype: fp16 ? 'float16' : 'float32',
    });
    const labels = g.input('labels', 'int64', ['batch', 'seq']);
    // The loss (log-softmax over the vocabulary) always runs in float32.
    const loss = crossEntropy(cast(llama.logits(), 'float32'), labels, { reduction: 'sum' });
    const inputs = bound.inputs();
    const byName = new Map(inputs.map((t) => [t.name!, t]));
    const missing = adapter.tensors.filter((t) => !byName.has(t.name));
    if (missing.length) {
      throw new UserError(
        `adapter tensor "${missing[0]!.name}" is not used by the model graph; check targetModules/layersToTransform`,
      );
    }
    const wrt = adapter.tensors.map((t) => byName.get(t.name)!);
    const sessionInputs = [
      llama.inputs.inputIds,
      llama.inputs.attentionMask,
      llama.inputs.ropeCos,
      llama.inputs.ropeSin,
      labels,
      ...(seed ? [seed] : []),
      ...wrt,
    ];
    return { g, loss, wrt, sessionInputs, llama };
  };
  const train = lossGraph(dropout);
  const evaluation = dropout ? lossGraph(false) : train;
  const trainables: TrainableSpec[] = adapter.tensors.map((t) => {
    const init = opts.initialValues?.get(t.name) ?? t.init;
    if (init.length !== t.init.length) {
      throw new UserError(
        `initial value of "${t.name}" has ${init.length} values, expected ${t.init.length}`,
      );
    }
    return { name: t.name, shape: [...t.shape], init, group: t.group };
  });
  // With loss scaling the backward starts from `lossScale` instead of 1; lossAndGrads divides it out.
  const seed = lossScale === 1 ? undefined : train.g.constant('float32', [], Float32Array.of(lossScale));
  const grads =
    ((opts.recompute ?? config.hiddenSize >= 1024)
      ? recomputedGrads(train.llama, train.loss, train.wrt, seed)
      : null) ?? grad(train.loss, train.wrt, seed ? { seed } : {});
  const gradOutputs: Record<string, Tensor> = { loss: train.loss };
  train.wrt.forEach((t, i) => (gradOutputs[`grad:${t.name}`] = grads[i]!));
  const sessionOptions = {
    provider: opts.provider ?? 'cpu',
    intraOpThreads: opts.intraOpThreads,
    externalDataTotalBytes: opts.externalDataTotalBytes ?? 256 * 2 ** 20,
  };
  const trainSessionOptions = opts.optimizedModelPath
    ? { ...sessionOptions, optimizedModelPath: opts.optimizedModelPath }
    : sessionOptions;
  const trainSession = new Session(
    train.g,
    { inputs: train.sessionInputs, outputs: gradOutputs },
    trainSessionOptions,
  );
  const evalSession = new Session(
    evaluation.g,
    { inputs: evaluation.sessionInputs, outputs: { loss: evaluation.loss } },
    sessionOptions,
  );
  const ropeTables = new RopeTableCache(ropeInverseFrequencies(config));
  const half = config.headDim / 2;
  /** The 0/1 mask as the int64 the graph takes (a plain loop: BigInt() per element is slow). */
  const int64Mask = (mask: Uint8Array): BigInt64Array => {
    const out = new BigInt64Array(mask.length);
    for (let i = 0; i < mask.length; i++) if (mask[i]) out[i] = 1n;
    return out;
  };

  const feeds = (batch: TokenBatch, params: ReadonlyMap<string, Float32Array>): Record<string, Feed> => {
    if (batch.segmentIds) {
      throw new UserError('the LLaMA step program does not support packed batches; set packing: false');
    }
    if (batch.seqLen > config.maxPositionEmbeddings) {
      throw new UserError(
        `sequences of ${batch.seqLen} tokens exceed the model's max_position_embeddings ${config.maxPositionEmbeddings}; lower maxLength`,
      );
    }
    const dims = [batch.batchSize, batch.seqLen];
    const { cos, sin } = ropeTables.get(batch.seqLen);
    const f: Record<string, Feed> = {
      input_ids: { data: batch.inputIds, dims },
      attention_mask: { data: int64Mask(batch.attentionMask), dims },
      rope_cos: { data: cos, dims: [batch.seqLen, half] },
      rope_sin: { data: sin, dims: [batch.seqLen, half] },
      labels: { data: batch.labels, dims },
    };
    for (const t of trainables) f[t.name] = params.get(t.name)!;
    return f;
  };

  return {
    trainables,
    supportsPacking: false,
    maxSeqLen: config.maxPositionEmbeddings,
    async lossAndGrads(batch, params) {
      const f = feeds(batch, params);
      // A seed per micro-batch (set by the trainer from its position in the data), so resumed runs draw the
      // same dropout masks.
      if (dropout) f.dropout_seed = BigInt64Array.of(BigInt(batch.dropoutSeed ?? 0));
      const out = await trainSession.run(f);
      const result = new Map<string, Float32Array>();
      for (const t of trainables) {
        const g = out[`grad:${t.name}`]!.data as Float32Array;
        if (lossScale !== 1) {
          for (let i = 0; i < g.length; i++) g[i] = g[i]! / lossScale;
          if (!g.every(Number.isFinite)) {
            throw new UserError(
              `float16 gradients of "${t.name}" overflowed at loss scale ${lossScale}; lower lossScale or use precision fp32`,
            );
          }
        }
        result.set(t.name, g);
      }
      return {
        lossSum: (out.loss!.data as Float32Array)[0]!,
        tokens: countTargets(batch.labels),
        grads: result,
      };
    },
    async loss(batch, params) {
      const out = await evalSession.run(feeds(batch, params));
      return { lossSum: (out.loss!.data as Float32Array)[0]!, tokens: countTargets(batch.labels) };
    },
    metrics: (params) => gateMetrics(trainables, params),
    async release() {
      await trainSession.release();
      await evalSession.release();
    },
  };
}
