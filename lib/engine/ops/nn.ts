/**
 * Neural-network ops whose gradients are cheaper as a dedicated formula than through their decomposition:
 * softmax, log-softmax, cross-entropy with an ignore index, and RMS normalisation.
 */
import { graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import { dimEq, normAxis, shapeEq } from '../shape.ts';
import { exp, mul, sub } from './elementwise.ts';
import { reduceSum } from './reduce.ts';
import { requireFloat } from './util.ts';

// ---------- softmax / log-softmax ----------

const softmaxOp: OpDef<{ axis: number; log: boolean }> = {
  type: 'softmax',
  infer(inputs) {
    requireFloat('softmax', inputs, inputs[0]!);
    return [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null];
    const y = node.outputs[0]!;
    const { axis, log } = node.attrs;
    // softmax:     dx = y ⊙ (g − Σ g⊙y)
    // log-softmax: dx = g − softmax(x) ⊙ Σ g
    if (log) return [sub(g, mul(exp(y), reduceSum(g, axis, true)))];
    return [mul(y, sub(g, reduceSum(mul(g, y), axis, true)))];
  },
  emit(ctx, node) {
    ctx.node(
      node.attrs.log ? 'LogSoftmax' : 'Softmax',
      [ctx.name(node.inputs[0]!)],
      [ctx.name(node.outputs[0]!)],
      {
        axis: node.attrs.axis,
      },
    );
  },
};

export function softmax(x: Tensor, axis = -1): Tensor {
  return x.graph.apply(softmaxOp, [x], { axis: normAxis(axis, x.rank, 'softmax'), log: false })[0]!;
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return x.graph.apply(softmaxOp, [x], { axis: normAxis(axis, x.rank, 'log_softmax'), log: true })[0]!;
}

// ---------- cross-entropy ----------

export type CrossEntropyReduction = 'mean' | 'sum' | 'none';

interface CrossEntropyAttrs {
  ignoreIndex: number;
  reduction: CrossEntropyReduction;
}

/**
 * Token cross-entropy: logits [..., V], labels [...] (int64). Labels equal to `ignoreIndex` (−100, as in
 * PyTorch) contribute nothing and are not counted. Reductions: 'mean' over counted labels (0 when there are
 * none), 'sum' (what gradient accumulation needs: sums divide exactly by the total count later), or 'none'
 * (per-token losses, 0 at ignored positions; the basis of log-likelihood scoring).
 */
const crossEntropyOp: OpDef<CrossEntropyAttrs> = {
  type: 'cross_entropy',
  infer(inputs, attrs) {
    const [logits, labels] = inputs as [Tensor, Tensor];
    requireFloat('cross_entropy', inputs, logits);
    if (labels.dtype !== 'int64') opError('cross_entropy', inputs, 'labels must be int64');
    if (!shapeEq(labels.shape, logits.shape.slice(0, -1))) {
      opError(
        'cross_entropy',
        inputs,
        'labels must have the shape of logits without the last (vocabulary) axis',
      );
    }
    return [{ dtype: logits.dtype, shape: attrs.reduction === 'none' ? labels.shape : [] }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null, null];
    const [logits, labels] = node.inputs as [Tensor, Tensor];
    return [
      graphOf('cross_entropy_grad', logits, labels, g).apply(
        crossEntropyGradOp,
        [logits, labels, g],
        node.attrs,
      )[0]!,
      null,
    ];
  },
  emit(ctx, node) {
    const [logits, labels] = node.inputs as [Tensor, Tensor];
    const dt = logits.dtype;
    const { mask, safe, count } = emitLabelMask(ctx, labels, node.attrs.ignoreIndex, dt);
    const logp = ctx.fresh('logp');
    ctx.node('LogSoftmax', [ctx.name(logits)], [logp], { axis: -1 });
    const idx = ctx.fresh('idx');
    ctx.node('Unsqueeze', [safe, ctx.int64([-1])], [idx]);
    const picked = ctx.fresh('picked');
    ctx.node('GatherElements', [logp, idx], [picked], { axis: -1 });
    const pickedFlat = ctx.fresh('pickedflat');
    ctx.node('Squeeze', [picked, ctx.int64([-1])], [pickedFlat]);
    const masked = ctx.fresh('masked');
    ctx.node('Mul', [pickedFlat, mask], [masked]);
    const out = ctx.name(node.outputs[0]!);
    if (node.attrs.reduction === 'none') {
      ctx.node('Neg', [masked], [out]);
      return;
    }
    const total = ctx.fresh('total');
    ctx.node('ReduceSum', [masked], [total], { keepdims: 0 });
    if (node.attrs.reduction === 'sum') {
      ctx.node('Neg', [total], [out]);
      return;
    }
    const mean = ctx.fresh('mean');
    ctx.node('Div', [total, count], [mean]);
    ctx.node('Neg', [mean], [out]);
  },
};

/** Emits mask (float, 1 where counted), safe labels (ignored → 0) and max(count, 1). */
function emitLabelMask(
  ctx: Parameters<OpDef['emit']>[0],
  labels: Tensor,
  ignoreIndex: number,
  dt: Tensor['dtype'],
) {
  const ignored = ctx.fresh('ignored');
  ctx.node('Equal', [ctx.name(labels), ctx.int64([ignoreIndex], true)], [ignored]);
  const safe = ctx.fresh('safe');
  ctx.node('Where', [ignored, ctx.int64([0], true), ctx.name(labels)], [safe]);
  const keep = ctx.fresh('keep');
  ctx.node('Not', [ignored], [keep]);
  const mask = ctx.fresh('mask');
  ctx.node('Cast', [keep], [mask], { to: onnxFloat(dt) });
  const n = ctx.fresh('n');
  ctx.node('ReduceSum', [mask], [n], { keepdims: 0 });
  const count = ctx.fresh('count');
  ctx.node('Max', [n, ctx.scalar(1, dt)], [count]);
  return { mask, safe, count };
}

function onnxFloat(dt: Tensor['dtype']): number {
  return dt === 'float64' ? 11 : dt === 'float16' ? 10 : 1;
}

/** d loss / d logits = (softmax(logits) − onehot(label)) ⊙ mask · g (divided by the count for 'mean'). */
const crossEntropyGradOp: OpDef<CrossEntropyAttrs> = {
  type: 'cross_entropy_grad',
  infer: (inputs) => [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }],
  emit(ctx, node) {
    const [logits, labels, g] = node.inputs as [Tensor, Tensor, Tensor];
    const dt = logits.dtype;
    const vocab = ctx.shape(logits).at(-1)!;
    const { mask, safe, count } = emitLabelMask(ctx, labels, node.attrs.ignoreIndex, dt);
    const p = ctx.fresh('p');
    ctx.node('Softmax', [ctx.name(logits)], [p], { axis: -1 });
    // one-hot as (label == range(V)); OneHot itself has no float64 kernel on CPU.
    const ids = ctx.fresh('ids');
    ctx.node('Range', [ctx.int64([0], true), ctx.int64([vocab], true), ctx.int64([1], true)], [ids]);
    const col = ctx.fresh('col');
    ctx.node('Unsqueeze', [safe, ctx.int64([-1])], [col]);
    const hit = ctx.fresh('hit');
    ctx.node('Equal', [col, ids], [hit]);
    const oneHot = ctx.fresh('onehot');
    ctx.node('Cast', [hit], [oneHot], { to: onnxFloat(dt) });
    const diff = ctx.fresh('diff');
    ctx.node('Sub', [p, oneHot], [diff]);
    let scale = ctx.name(g);
    if (node.attrs.reduction === 'mean') {
      scale = ctx.fresh('scale');
      ctx.node('Div', [ctx.name(g), count], [scale]);
    }
    const w = ctx.fresh('w');
    ctx.node('Mul', [mask, scale], [w]);
    const wCol = ctx.fresh('wcol');
    ctx.node('Unsqueeze', [w, ctx.int64([-1])], [wCol]);
    ctx.node('Mul', [diff, wCol], [ctx.name(node.outputs[0]!)]);
  },
};

export function crossEntropy(
  logits: Tensor,
  labels: Tensor,
  opts: { ignoreIndex?: number; reduction?: CrossEntropyReduction } = {},
): Tensor {
  return graphOf('cross_entropy', logits, labels).apply(crossEntropyOp, [logits, labels], {
    ignoreIndex: opts.ignoreIndex ?? -100,
    reduction: opts.reduction ?? 'mean',
  })[0]!;
}

// ---------- RMS normalisation ----------

interface RmsNormAttrs {
  eps: number;
}

/** y = w ⊙ x / √(mean(x², last axis) + ε). SimplifiedLayerNormalization for float32/16, decomposed for float64. */
const rmsNormOp: OpDef<RmsNormAttrs> = {
  type: 'rms_norm',
  infer(inputs) {
    const [x, w] = inputs as [Tensor, Tensor];
    requireFloat('rms_norm', inputs, x, w);
    if (w.rank !== 1 || !dimEq(w.shape[0]!, x.shape[x.rank - 1]!)) {
      opError('rms_norm', inputs, 'the weight must be a vector as long as the last axis of x');
    }
    if (x.dtype !== w.dtype) opError('rms_norm', inputs, 'x and weight dtypes differ');
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  vjp(node, [g], needs) {
    if (!g || (!needs[0] && !needs[1])) return [null, null];
    const [x, w] = node.inputs as [Tensor, Tensor];
    const [dx, dw] = graphOf('rms_norm_grad', x, w, g).apply(rmsNormGradOp, [x, w, g], {
      ...node.attrs,
      wantX: needs[0]!,
      wantW: needs[1]!,
    });
    return [needs[0] ? dx! : null, needs[1] ? dw! : null];
  },
  emit(ctx, node) {
    const [x, w] = node.inputs as [Tensor, Tensor];
    const out = ctx.name(node.outputs[0]!);
    if (x.dtype === 'float32' || x.dtype === 'float16') {
      ctx.node(
        'SimplifiedLayerNormalization',
        [ctx.name(x), ctx.name(w)],
        [out],
        { axis: -1, epsilon: node.attrs.eps },
        {
          floatAttrs: ['epsilon'],
        },
      );
      return;
    }
    const r = emitInvRms(ctx, x, node.attrs.eps);
    const xhat = ctx.fresh('xhat');
    ctx.node('Mul', [ctx.name(x), r], [xhat]);
    ctx.node('Mul', [xhat, ctx.name(w)], [out]);
  },
};

/** 1/√(mean(x², last axis) + ε) with keepdims. */
function emitInvRms(ctx: Parameters<OpDef['emit']>[0], x: Tensor, eps: number): string {
  const sq = ctx.fresh('sq');
  ctx.node('Mul', [ctx.name(x), ctx.name(x)], [sq]);
  const ms = ctx.fresh('ms');
  ctx.node('ReduceMean', [sq, ctx.int64([-1])], [ms], { keepdims: 1 });
  const mse = ctx.fresh('mse');
  ctx.node('Add', [ms, ctx.scalar(eps, x.dtype)], [mse]);
  const rms = ctx.fresh('rms');
  ctx.node('Sqrt', [mse], [rms]);
  const r = ctx.fresh('invrms');
  ctx.node('Reciprocal', [rms], [r]);
  return r;
}

/**
 * With r = 1/rms(x) and x̂ = x·r:  dw = Σ_tokens g ⊙ x̂;  dx = r ⊙ (g⊙w − x̂ · mean(g⊙w⊙x̂)).
 * r is recomputed (one pass over x) rather than kept from the forward.
 */
const rmsNormGradOp: OpDef<RmsNormAttrs & { wantX: boolean; wantW: boolean }> = {
  type: 'rms_norm_grad',
  infer: (inputs) => [
    { dtype: inputs[0]!.dtype, shape: inputs[0]!.shape },
    { dtype: inputs[1]!.dtype, shape: inputs[1]!.shape },
  ],
  emit(ctx, node) {
    const [x, w, g] = node.inputs as [Tensor, Tensor, Tensor];
    const [dxT, dwT] = node.outputs as [Tensor, Tensor];
    const r = emitInvRms(ctx, x, node.attrs.eps);
    const xhat = ctx.fresh('xhat');
    ctx.node('Mul', [ctx.name(x), r], [xhat]);
    if (node.attrs.wantW) {
      const gx = ctx.fresh('gx');
      ctx.node('Mul', [ctx.name(g), xhat], [gx]);
      const lead = [...Array(x.rank - 1).keys()];
      if (lead.length) ctx.node('ReduceSum', [gx, ctx.int64(lead)], [ctx.name(dwT)], { keepdims: 0 });
      else ctx.node('Identity', [gx], [ctx.name(dwT)]);
    }
    if (node.attrs.wantX) {
      const gw = ctx.fresh('gw');
      ctx.node('Mul', [ctx.name(g), ctx.name(w)], [gw]);
      const gwx = ctx.fresh('gwx');
      ctx.node('Mul', [gw, xhat], [gwx]);
      const m = ctx.fresh('m');
      ctx.node('ReduceMean', [gwx, ctx.int64([-1])], [m], { keepdims: 1 });
      const xm = ctx.fresh('xm');
      ctx.node('Mul', [xhat, m], [xm]);
      const d = ctx.fresh('d');
      ctx.node('Sub', [gw, xm], [d]);
      ctx.node('Mul', [d, r], [ctx.name(dxT)]);
    }
  },
};

export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  return graphOf('rms_norm', x, weight).apply(rmsNormOp, [x, weight], { eps })[0]!;
}
