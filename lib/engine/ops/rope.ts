/**
 * Rotary position embedding in the Hugging Face "rotate_half" convention: the pairs rotated together are
 * (i, i + d/2) of each head. cos/sin are [seq, d/2] tables (per position and frequency), broadcast over the
 * leading axes of x [..., seq, d]. The inverse rotation (negated sin) is the VJP, because rotations are
 * orthogonal.
 */
import { graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import { dimEq } from '../shape.ts';
import { requireFloat } from './util.ts';

const ropeOp: OpDef<{ inverse: boolean }> = {
  type: 'rope',
  infer(inputs) {
    const [x, cos, sin] = inputs as [Tensor, Tensor, Tensor];
    requireFloat('rope', inputs, x, cos, sin);
    if (x.rank < 2) opError('rope', inputs, 'x needs at least [seq, head_dim]');
    const d = x.shape[x.rank - 1]!;
    const s = x.shape[x.rank - 2]!;
    if (typeof d !== 'number' || d % 2 !== 0) opError('rope', inputs, 'head_dim must be a fixed even number');
    for (const t of [cos, sin]) {
      if (t.rank !== 2 || !dimEq(t.shape[0]!, s) || !dimEq(t.shape[1]!, (d as number) / 2)) {
        opError('rope', inputs, `cos/sin must be [seq, head_dim/2] = [${s}, ${(d as number) / 2}]`);
      }
    }
    if (cos.dtype !== x.dtype || sin.dtype !== x.dtype) opError('rope', inputs, 'cos/sin dtype must match x');
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null, null, null];
    const [, cos, sin] = node.inputs as [Tensor, Tensor, Tensor];
    return [applyRope(g, cos, sin, !node.attrs.inverse), null, null];
  },
  emit(ctx, node) {
    const [x, cos, sin] = node.inputs as [Tensor, Tensor, Tensor];
    const half = ctx.shape(x).at(-1)! / 2;
    const x1 = ctx.fresh('x1');
    const x2 = ctx.fresh('x2');
    ctx.node('Split', [ctx.name(x), ctx.int64([half, half])], [x1, x2], { axis: -1 });
    let s = ctx.name(sin);
    if (node.attrs.inverse) {
      s = ctx.fresh('nsin');
      ctx.node('Neg', [ctx.name(sin)], [s]);
    }
    const c = ctx.name(cos);
    // out1 = x1·cos − x2·sin ; out2 = x2·cos + x1·sin
    const a = ctx.fresh('a');
    const b = ctx.fresh('b');
    const o1 = ctx.fresh('o1');
    ctx.node('Mul', [x1, c], [a]);
    ctx.node('Mul', [x2, s], [b]);
    ctx.node('Sub', [a, b], [o1]);
    const e = ctx.fresh('e');
    const f = ctx.fresh('f');
    const o2 = ctx.fresh('o2');
    ctx.node('Mul', [x2, c], [e]);
    ctx.node('Mul', [x1, s], [f]);
    ctx.node('Add', [e, f], [o2]);
    ctx.node('Concat', [o1, o2], [ctx.name(node.outputs[0]!)], { axis: -1 });
  },
};

function applyRope(x: Tensor, cos: Tensor, sin: Tensor, inverse: boolean): Tensor {
  return graphOf('rope', x, cos, sin).apply(ropeOp, [x, cos, sin], { inverse })[0]!;
}

/** Rotates x [..., seq, head_dim] by the angles whose cos/sin tables are [seq, head_dim/2]. */
export function rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  return applyRope(x, cos, sin, false);
}

/** cos/sin tables for positions 0..seq−1 given inverse frequencies (length head_dim/2), in float64. */
export function ropeTables(
  invFreq: readonly number[],
  positions: readonly number[],
): { cos: Float64Array; sin: Float64Array } {
  const h = invFreq.length;
  const cos = new Float64Array(positions.length * h);
  const sin = new Float64Array(positions.length * h);
  positions.forEach((p, s) => {
    for (let i = 0; i < h; i++) {
      const angle = p * invFreq[i]!;
      cos[s * h + i] = Math.cos(angle);
      sin[s * h + i] = Math.sin(angle);
    }
  });
  return { cos, sin };
}
