/**
 * Scaled dot-product attention with grouped-query heads and a causal mask, and its dedicated backward.
 *
 * q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv] with Hq a multiple of Hkv: query head h reads key/value
 * head ⌊h / (Hq/Hkv)⌋ (the Hugging Face convention). With `causal`, query i may see key j when
 * j ≤ i + (Sk − Sq), so a decoding step with a key/value cache of earlier positions works unchanged. An optional
 * additive `mask` [B, 1, 1|Sq, Sk] (0 or a large negative number) hides padding.
 *
 * The forward also outputs the attention probabilities, which the backward reuses:
 *   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP − Σ dP⊙P) · scale,  dQ = dS·K,  dK = dSᵀ·Q
 * (dK and dV summed over the query heads that share a key/value head).
 */
import { graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import { dimEq, divDims } from '../shape.ts';
import type { EmitContext } from '../emit-context.ts';
import { requireFloat } from './util.ts';

interface AttentionAttrs {
  causal: boolean;
  scale: number;
  hasMask: boolean;
}

/**
 * What a masked attention score is set to (causal mask; padding masks should use it too): exp() of it underflows
 * to exactly 0 next to real scores in float32, and it becomes −∞ in float16, which softmax also maps to 0.
 */
export const MASKED_SCORE = -1e9;

const attentionOp: OpDef<AttentionAttrs> = {
  type: 'attention',
  infer(inputs) {
    const [q, k, v, mask] = inputs as [Tensor, Tensor, Tensor, Tensor | undefined];
    requireFloat('attention', inputs, q, k, v);
    if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4)
      opError('attention', inputs, 'q, k, v must be [B, H, S, D]');
    if (q.dtype !== k.dtype || q.dtype !== v.dtype) opError('attention', inputs, 'q, k, v dtypes differ');
    const [b, hq, sq, d] = q.shape;
    const [bk, hkv, sk, dk] = k.shape;
    if (!dimEq(b!, bk!) || !dimEq(b!, v.shape[0]!)) opError('attention', inputs, 'batch sizes differ');
    if (!dimEq(d!, dk!)) opError('attention', inputs, 'q and k head sizes differ');
    if (!dimEq(hkv!, v.shape[1]!) || !dimEq(sk!, v.shape[2]!))
      opError('attention', inputs, 'k and v differ in heads or length');
    if (divDims(hq!, hkv!) === null)
      opError('attention', inputs, `query heads ${hq} are not a multiple of kv heads ${hkv}`);
    if (mask && (mask.rank !== 4 || mask.dtype !== q.dtype || !dimEq(mask.shape[3]!, sk!))) {
      opError('attention', inputs, 'mask must be additive, [B, 1, 1|Sq, Sk], of the dtype of q');
    }
    return [
      { dtype: q.dtype, shape: [b!, hq!, sq!, v.shape[3]!] },
      { dtype: q.dtype, shape: [b!, hq!, sq!, sk!] },
    ];
  },
  vjp(node, [gOut, gProbs], needs) {
    if (gProbs) throw new Error('attention: the probabilities output is not differentiable; use output 0');
    if (!gOut) return node.inputs.map(() => null);
    const [q, k, v] = node.inputs as [Tensor, Tensor, Tensor];
    const probs = node.outputs[1]!;
    const wants = [needs[0]!, needs[1]!, needs[2]!];
    const outs = graphOf('attention_grad', q, k, v, probs, gOut).apply(
      attentionGradOp,
      [q, k, v, probs, gOut],
      {
        scale: node.attrs.scale,
        wants,
      },
    );
    return [wants[0] ? outs[0]! : null, wants[1] ? outs[1]! : null, wants[2] ? outs[2]! : null, null];
  },
  emit(ctx, node) {
    const [q, k, v, mask] = node.inputs as [Tensor, Tensor, Tensor, Tensor | undefined];
    const [B, Hq, Sq, D] = ctx.shape(q) as [number, number, number, number];
    const [, Hkv, Sk] = ctx.shape(k) as [number, number, number];
    const Dv = ctx.shape(v)[3]!;
    const rep = Hq / Hkv;
    // Group query heads by their kv head: q5 [B, Hkv, rep, Sq, D]; k5, v5 [B, Hkv, 1, Sk, *] broadcast over rep.
    const q5 = reshapeTo(ctx, ctx.name(q), [B, Hkv, rep, Sq, D]);
    const k5 = reshapeTo(ctx, ctx.name(k), [B, Hkv, 1, Sk, D]);
    const v5 = reshapeTo(ctx, ctx.name(v), [B, Hkv, 1, Sk, Dv]);
    const scores = ctx.fresh('scores');
    emitMatmulT(ctx, q.dtype, q5, k5, scores, node.attrs.scale, false, true);
    let logits = scores;
    if (node.attrs.causal) {
      const causal = emitCausalMask(ctx, Sq, Sk, q.dtype);
      logits = ctx.fresh('causal');
      ctx.node('Add', [scores, causal], [logits]);
    }
    if (mask) {
      const m5 = reshapeTo(ctx, ctx.name(mask), [B, 1, 1, ctx.shape(mask)[2]!, Sk]);
      const masked = ctx.fresh('masked');
      ctx.node('Add', [logits, m5], [masked]);
      logits = masked;
    }
    // The Softmax writes the probabilities output itself, in its [B, Hq, Sq, Sk] shape (a view of the grouped
    // layout). A Reshape of its own would be a node that nothing reads when the backward does not use these
    // probabilities (inference, or a layer recomputed in the backward): ORT still runs such a node, last, so
    // every layer's probabilities stayed alive to the end of the run (32 MB per LLaMA-2-7B layer at 512 tokens).
    const logits4 = reshapeTo(ctx, logits, [B, Hq, Sq, Sk]);
    const probs = ctx.name(node.outputs[1]!);
    ctx.node('Softmax', [logits4], [probs], { axis: -1 });
    const p5 = reshapeTo(ctx, probs, [B, Hkv, rep, Sq, Sk]);
    const o5 = ctx.fresh('o5');
    ctx.node('MatMul', [p5, v5], [o5]);
    ctx.node('Reshape', [o5, ctx.int64([B, Hq, Sq, Dv])], [ctx.name(node.outputs[0]!)]);
  },
};

const attentionGradOp: OpDef<{ scale: number; wants: boolean[] }> = {
  type: 'attention_grad',
  infer: (inputs) => inputs.slice(0, 3).map((t) => ({ dtype: t.dtype, shape: t.shape })),
  emit(ctx, node) {
    const [q, k, v, probs, g] = node.inputs as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const [dq, dk, dv] = node.outputs as [Tensor, Tensor, Tensor];
    const [wantQ, wantK, wantV] = node.attrs.wants as [boolean, boolean, boolean];
    const [B, Hq, Sq, D] = ctx.shape(q) as [number, number, number, number];
    const [, Hkv, Sk] = ctx.shape(k) as [number, number, number];
    const Dv = ctx.shape(v)[3]!;
    const rep = Hq / Hkv;
    const dt = q.dtype;
    const p5 = reshapeTo(ctx, ctx.name(probs), [B, Hkv, rep, Sq, Sk]);
    const g5 = reshapeTo(ctx, ctx.name(g), [B, Hkv, rep, Sq, Dv]);
    if (wantV) {
      // dV = Σ_rep P5ᵀ·G5
      const dv5 = ctx.fresh('dv5');
      emitMatmulT(ctx, dt, p5, g5, dv5, 1, true, false);
      ctx.node('ReduceSum', [dv5, ctx.int64([2])], [ctx.name(dv)], { keepdims: 0 });
    }
    if (!wantQ && !wantK) return;
    const v5 = reshapeTo(ctx, ctx.name(v), [B, Hkv, 1, Sk, Dv]);
    const dp = ctx.fresh('dp');
    emitMatmulT(ctx, dt, g5, v5, dp, 1, false, true);
    const dpp = ctx.fresh('dpp');
    ctx.node('Mul', [dp, p5], [dpp]);
    const rowsum = ctx.fresh('rowsum');
    ctx.node('ReduceSum', [dpp, ctx.int64([-1])], [rowsum], { keepdims: 1 });
    const centered = ctx.fresh('centered');
    ctx.node('Sub', [dp, rowsum], [centered]);
    const ds0 = ctx.fresh('ds0');
    ctx.node('Mul', [p5, centered], [ds0]);
    const ds = ctx.fresh('ds');
    ctx.node('Mul', [ds0, ctx.scalar(node.attrs.scale, dt)], [ds]);
    if (wantQ) {
      const k5 = reshapeTo(ctx, ctx.name(k), [B, Hkv, 1, Sk, D]);
      const dq5 = ctx.fresh('dq5');
      ctx.node('MatMul', [ds, k5], [dq5]);
      ctx.node('Reshape', [dq5, ctx.int64([B, Hq, Sq, D])], [ctx.name(dq)]);
    }
    if (wantK) {
      const q5 = reshapeTo(ctx, ctx.name(q), [B, Hkv, rep, Sq, D]);
      const dk5 = ctx.fresh('dk5');
      emitMatmulT(ctx, dt, ds, q5, dk5, 1, true, false);
      ctx.node('ReduceSum', [dk5, ctx.int64([2])], [ctx.name(dk)], { keepdims: 0 });
    }
  },
};

function reshapeTo(ctx: EmitContext, name: string, shape: number[]): string {
  const out = ctx.fresh('r');
  ctx.node('Reshape', [name, ctx.int64(shape)], [out]);
  return out;
}

/** out = alpha · op(a)·op(b) for rank-5 operands, without materialised transposes where a kernel allows. */
function emitMatmulT(
  ctx: EmitContext,
  dt: Tensor['dtype'],
  a: string,
  b: string,
  out: string,
  alpha: number,
  transA: boolean,
  transB: boolean,
): void {
  if (dt === 'float32' || dt === 'float16') {
    ctx.node(
      'FusedMatMul',
      [a, b],
      [out],
      { transA: transA ? 1 : 0, transB: transB ? 1 : 0, alpha },
      {
        domain: 'com.microsoft',
        floatAttrs: ['alpha'],
      },
    );
    return;
  }
  const swap = (n: string) => {
    const t = ctx.fresh('T');
    ctx.node('Transpose', [n], [t], { perm: [0, 1, 2, 4, 3] });
    return t;
  };
  const prod = alpha === 1 ? out : ctx.fresh('prod');
  ctx.node('MatMul', [transA ? swap(a) : a, transB ? swap(b) : b], [prod]);
  if (alpha !== 1) ctx.node('Mul', [prod, ctx.scalar(alpha, dt)], [out]);
}

/** [Sq, Sk] additive mask: 0 where key j ≤ i + (Sk − Sq), a large negative number elsewhere. */
function emitCausalMask(ctx: EmitContext, sq: number, sk: number, dt: Tensor['dtype']): string {
  const ones = ctx.fresh('ones');
  ctx.node('ConstantOfShape', [ctx.int64([sq, sk])], [ones], {
    value: { tensor: { dataType: 9, dims: [1], rawData: Uint8Array.of(1) } },
  });
  const allowed = ctx.fresh('allowed');
  ctx.node('Trilu', [ones, ctx.int64([sk - sq], true)], [allowed], { upper: 0 });
  const mask = ctx.fresh('cmask');
  ctx.node('Where', [allowed, ctx.scalar(0, dt), ctx.scalar(MASKED_SCORE, dt)], [mask]);
  return mask;
}

export interface AttentionOptions {
  causal?: boolean;
  /** Defaults to 1/√head_dim. */
  scale?: number;
  /** Additive mask [B, 1, 1|Sq, Sk]. */
  mask?: Tensor;
}

/** Scaled dot-product attention (see the file comment). Returns [B, Hq, Sq, Dv]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const d = q.shape[3];
  if (typeof d !== 'number') opError('attention', [q, k, v], 'head_dim must be a fixed number');
  const inputs = opts.mask ? [q, k, v, opts.mask] : [q, k, v];
  return graphOf('attention', ...inputs).apply(attentionOp, inputs, {
    causal: opts.causal ?? true,
    scale: opts.scale ?? 1 / Math.sqrt(d as number),
    hasMask: !!opts.mask,
  })[0]!;
}
