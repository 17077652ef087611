/**
 * Small but real step programs for the trainer tests, built with the engine and run by ONNX Runtime:
 * - `bigramProgram`: embedding → linear head, scaled by a trainable scalar gate (group 'gate'): logits depend on
 *   the current token only, so padding and batch composition cannot change a sample's loss;
 * - `attentionProgram`: embedding + learned positions → one causal attention layer with a residual → head; with
 *   `packed` it honours segment and position ids through `packedAttentionMask` (the packing no-leak test).
 * Both compute the summed token loss and its gradients in one session run, as the real LLaMA program will.
 */
import {
  Graph,
  Session,
  add,
  attention,
  crossEntropy,
  gather,
  grad,
  linear,
  mul,
  reshape,
  transpose,
  type Tensor,
} from '../../lib/engine/index.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';
import { defaultPositionIds, defaultSegmentIds, packedAttentionMask } from '../../lib/train/packing.ts';
import {
  countTargets,
  type StepProgram,
  type TokenBatch,
  type TrainableSpec,
} from '../../lib/train/step-program.ts';

function normal(n: number, seed: number, std: number): Float32Array {
  return fillNormal(new Float32Array(n), mulberry32(seed), std);
}

interface Built {
  graph: Graph;
  inputs: Tensor[];
  loss: Tensor;
  trainables: Tensor[];
  feeds(batch: TokenBatch): Record<string, { data: BigInt64Array; dims: number[] }>;
}

function makeProgram(
  built: Built,
  specs: TrainableSpec[],
  threads: number,
  supportsPacking: boolean,
): StepProgram {
  const { graph, inputs, loss, trainables } = built;
  const grads = grad(loss, trainables);
  const outputs: Record<string, Tensor> = { loss };
  trainables.forEach((t, i) => (outputs[`d_${t.name}`] = grads[i]!));
  // intraOpThreads 1: ORT's reductions then run in one fixed order, the basis of bit-identical runs.
  const sessionOpts = { intraOpThreads: threads };
  const train = new Session(graph, { inputs, outputs }, sessionOpts);
  const evalSession = new Session(graph, { inputs, outputs: { loss } }, sessionOpts);
  const feedsOf = (batch: TokenBatch, params: ReadonlyMap<string, Float32Array>) => {
    const feeds: Record<string, unknown> = { ...built.feeds(batch) };
    for (const s of specs) feeds[s.name] = params.get(s.name)!;
    return feeds as Parameters<Session['run']>[0];
  };
  return {
    trainables: specs,
    supportsPacking,
    async lossAndGrads(batch, params) {
      const out = await train.run(feedsOf(batch, params));
      const g = new Map<string, Float32Array>();
      for (const s of specs) g.set(s.name, Float32Array.from(out[`d_${s.name}`]!.data as Float32Array));
      return { lossSum: (out.loss!.data as Float32Array)[0]!, tokens: countTargets(batch.labels), grads: g };
    },
    async loss(batch, params) {
      const out = await evalSession.run(feedsOf(batch, params));
      return { lossSum: (out.loss!.data as Float32Array)[0]!, tokens: countTargets(batch.labels) };
    },
    metrics(params): Record<string, number | number[]> {
      const gate = params.get('gate');
      return gate ? { gate: gate[0]! } : {};
    },
    async release() {
      await train.release();
      await evalSession.release();
    },
  };
}

export interface BigramOptions {
  vocab: number;
  dim?: number;
  seed?: number;
  threads?: number;
}

export function bigramProgram(opts: BigramOptions): StepProgram {
  const { vocab } = opts;
  const dim = opts.dim ?? 16;
  const seed = opts.seed ?? 1;
  const g = new Graph('bigram');
  const ids = g.input('input_ids', 'int64', ['b', 's']);
  const labels = g.input('labels', 'int64', ['b', 's']);
  const emb = g.input('emb', 'float32', [vocab, dim]);
  const out = g.input('out', 'float32', [vocab, dim]);
  const gate = g.input('gate', 'float32', [1]);
  const logits = mul(linear(gather(emb, ids), out), gate);
  const loss = crossEntropy(logits, labels, { reduction: 'sum' });
  const specs: TrainableSpec[] = [
    { name: 'emb', shape: [vocab, dim], init: normal(vocab * dim, seed, 0.5), group: 'default' },
    { name: 'out', shape: [vocab, dim], init: normal(vocab * dim, seed + 1, 0.5), group: 'default' },
    { name: 'gate', shape: [1], init: Float32Array.of(1), group: 'gate' },
  ];
  return makeProgram(
    {
      graph: g,
      inputs: [ids, labels, emb, out, gate],
      loss,
      trainables: [emb, out, gate],
      feeds: (b) => ({
        input_ids: { data: b.inputIds, dims: [b.batchSize, b.seqLen] },
        labels: { data: b.labels, dims: [b.batchSize, b.seqLen] },
      }),
    },
    specs,
    opts.threads ?? 1,
    false,
  );
}

export interface AttentionOptions {
  vocab: number;
  dim?: number;
  maxPositions: number;
  seed?: number;
  /** Block-diagonal attention from segment ids (true), or plain causal attention over the whole row (false). */
  packed: boolean;
}

export function attentionProgram(opts: AttentionOptions): StepProgram {
  const { vocab, maxPositions } = opts;
  const d = opts.dim ?? 16;
  const seed = opts.seed ?? 3;
  const g = new Graph('attention');
  const ids = g.input('input_ids', 'int64', ['b', 's']);
  const labels = g.input('labels', 'int64', ['b', 's']);
  const positions = g.input('position_ids', 'int64', ['b', 's']);
  const segments = g.input('segment_ids', 'int64', ['b', 's']);
  const emb = g.input('emb', 'float32', [vocab, d]);
  const pos = g.input('pos', 'float32', [maxPositions, d]);
  const wq = g.input('wq', 'float32', [d, d]);
  const wk = g.input('wk', 'float32', [d, d]);
  const wv = g.input('wv', 'float32', [d, d]);
  const out = g.input('out', 'float32', [vocab, d]);
  const x = add(gather(emb, ids), gather(pos, positions));
  const heads = (t: Tensor) => transpose(reshape(t, ['b', 's', 1, d]), [0, 2, 1, 3]);
  const attn = attention(heads(linear(x, wq)), heads(linear(x, wk)), heads(linear(x, wv)), {
    causal: true,
    ...(opts.packed ? { mask: packedAttentionMask(segments) } : {}),
  });
  const y = add(x, reshape(transpose(attn, [0, 2, 1, 3]), ['b', 's', d]));
  const loss = crossEntropy(linear(y, out), labels, { reduction: 'sum' });
  const specs: TrainableSpec[] = [
    { name: 'emb', shape: [vocab, d], init: normal(vocab * d, seed, 0.5), group: 'default' },
    {
      name: 'pos',
      shape: [maxPositions, d],
      init: normal(maxPositions * d, seed + 1, 0.5),
      group: 'default',
    },
    { name: 'wq', shape: [d, d], init: normal(d * d, seed + 2, 0.5), group: 'default' },
    { name: 'wk', shape: [d, d], init: normal(d * d, seed + 3, 0.5), group: 'default' },
    { name: 'wv', shape: [d, d], init: normal(d * d, seed + 4, 0.5), group: 'default' },
    { name: 'out', shape: [vocab, d], init: normal(vocab * d, seed + 5, 0.5), group: 'default' },
  ];
  const inputs = [ids, labels, positions, segments, emb, pos, wq, wk, wv, out];
  return makeProgram(
    {
      graph: g,
      inputs,
      loss,
      trainables: [emb, pos, wq, wk, wv, out],
      feeds: (b) => {
        const dims = [b.batchSize, b.seqLen];
        return {
          input_ids: { data: b.inputIds, dims },
          labels: { data: b.labels, dims },
          position_ids: { data: b.positionIds ?? defaultPositionIds(b), dims },
          segment_ids: { data: b.segmentIds ?? defaultSegmentIds(b), dims },
        };
      },
    },
    specs,
    1,
    opts.packed,
  );
}
