/**
 * Batched matrix multiplication with optionally transposed operands. Transposes are never materialised:
 * 2-D products emit Gemm(transA, transB), batched float32/float16 ones com.microsoft FusedMatMul. (A
 * Transpose of a frozen weight would also be constant-folded into a second copy of the weight.)
 */
import { graphOf, opError, type Node, type OpDef, type Tensor } from '../graph.ts';
import { broadcastShapes, dimEq, mulDims, shapeEq } from '../shape.ts';
import { reshape, transpose } from './shape-ops.ts';
import { unbroadcast } from './elementwise.ts';
import { requireFloat, requireSameDtype } from './util.ts';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

interface MatmulAttrs {
  transA: boolean;
  transB: boolean;
}

const matmulOp: OpDef<MatmulAttrs> = {
  type: 'matmul',
  infer(inputs, { transA, transB }) {
    const [a, b] = inputs as [Tensor, Tensor];
    requireFloat('matmul', inputs, a, b);
    const dtype = requireSameDtype('matmul', inputs, a, b);
    if (a.rank < 2 || b.rank < 2) opError('matmul', inputs, 'both operands need rank >= 2 (reshape vectors)');
    const [m, ka] = transA
      ? [a.shape[a.rank - 1]!, a.shape[a.rank - 2]!]
      : [a.shape[a.rank - 2]!, a.shape[a.rank - 1]!];
    const [kb, n] = transB
      ? [b.shape[b.rank - 1]!, b.shape[b.rank - 2]!]
      : [b.shape[b.rank - 2]!, b.shape[b.rank - 1]!];
    if (!dimEq(ka, kb)) {
      opError(
        'matmul',
        inputs,
        `inner dimensions differ (${ka} vs ${kb}; transA=${transA}, transB=${transB})`,
      );
    }
    const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
    if (!batch) opError('matmul', inputs, 'batch dimensions do not broadcast');
    return [{ dtype, shape: [...batch, m, n] }];
  },
  vjp(node, [g], needs) {
    if (!g) return [null, null];
    const [a, b] = node.inputs as [Tensor, Tensor];
    const { transA, transB } = node.attrs;
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    // C = op(A)·op(B).  d op(A) = G·op(B)ᵀ,  d op(B) = op(A)ᵀ·G, transposed back when the operand was.
    if (needs[0]) {
      ga = foldedWeightGrad(node, g, 0);
      if (!ga) {
        ga = transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB });
        ga = unbroadcast(ga, a.shape);
      }
    }
    if (needs[1]) {
      gb = foldedWeightGrad(node, g, 1);
      if (!gb) {
        gb = transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA });
        gb = unbroadcast(gb, b.shape);
      }
    }
    return [ga, gb];
  },
  emit(ctx, node) {
    const [a, b] = node.inputs as [Tensor, Tensor];
    const { transA, transB } = node.attrs;
    const out = ctx.name(node.outputs[0]!);
    if (!transA && !transB) {
      ctx.node('MatMul', [ctx.name(a), ctx.name(b)], [out]);
    } else if (a.rank === 2 && b.rank === 2) {
      ctx.node('Gemm', [ctx.name(a), ctx.name(b)], [out], { transA: transA ? 1 : 0, transB: transB ? 1 : 0 });
    } else if (a.dtype === 'float32' || a.dtype === 'float16') {
      ctx.node(
        'FusedMatMul',
        [ctx.name(a), ctx.name(b)],
        [out],
        {
          transA: transA ? 1 : 0,
          transB: transB ? 1 : 0,
          alpha: 1.0,
        },
        { domain: 'com.microsoft', floatAttrs: ['alpha'] },
      );
    } else {
      // FusedMatMul has no float64 kernel: swap the last two axes explicitly (float64 is for checks only).
      const swap = (t: Tensor) => {
        const perm = [...Array(t.rank).keys()];
        [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1]!, perm[t.rank - 2]!];
        const n = ctx.fresh('T');
        ctx.node('Transpose', [ctx.name(t)], [n], { perm });
        return n;
      };
      ctx.node('MatMul', [transA ? swap(a) : ctx.name(a), transB ? swap(b) : ctx.name(b)], [out]);
    }
  },
};

/**
 * Gradient of a 2-D operand broadcast over the batch axes of a batched product (a weight shared by all
 * tokens), as ONE GEMM whose contraction runs over batch and rows together. The general rule would first
 * form one product per batch entry and then sum them: the same FLOPs but a batch-sized intermediate.
 * Returns null when the pattern does not apply.
 */
function foldedWeightGrad(node: Node<MatmulAttrs>, g: Tensor, which: 0 | 1): Tensor | null {
  const [a, b] = node.inputs as [Tensor, Tensor];
  const { transA, transB } = node.attrs;
  const [w, other] = which === 0 ? [a, b] : [b, a];
  const rank = g.rank;
  if (w.rank !== 2 || rank <= 2 || other.rank !== rank) return null;
  if (!shapeEq(other.shape.slice(0, -2), g.shape.slice(0, -2))) return null;
  const batch = mulDims(...g.shape.slice(0, -2));
  // Moves the second-to-last axis to the front: [..., r, c] → [r, ..., c] → [r, batch·c].
  const rowsFirst = (t: Tensor) => {
    const perm = [rank - 2, ...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1];
    return reshape(transpose(t, perm), [t.shape[rank - 2]!, mulDims(batch, t.shape[rank - 1]!)]);
  };
  const flat = (t: Tensor) => reshape(t, [mulDims(batch, t.shape[rank - 2]!), t.shape[rank - 1]!]);
  let dOp: Tensor;
  if (which === 0) {
    // d op(A) [m, k] = Σ_b G_b·op(B)_bᵀ = G' [m, b·n] · op(B)'ᵀ, with op(B)' [k, b·n] (or [b·n, k] when B is transposed).
    dOp = transB
      ? matmul(rowsFirst(g), flat(other))
      : matmul(rowsFirst(g), rowsFirst(other), { transB: true });
    return transA ? transpose(dOp, [1, 0]) : dOp;
  }
  // d op(B) [k, n] = Σ_b op(A)_bᵀ·G_b = op(A)'ᵀ [k, b·m] · G' [b·m, n].
  dOp = transA ? matmul(rowsFirst(other), flat(g)) : matmul(flat(other), flat(g), { transA: true });
  return transB ? transpose(dOp, [1, 0]) : dOp;
}

/** op(a)·op(b) over the last two axes, broadcasting leading (batch) axes; op transposes when asked. */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const attrs = { transA: opts.transA ?? false, transB: opts.transB ?? false };
  return graphOf('matmul', a, b).apply(matmulOp, [a, b], attrs)[0]!;
}
