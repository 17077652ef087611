/** Reductions over chosen axes: sum, mean, max. */
import { opError, type OpDef, type Tensor } from '../graph.ts';
import { canonDim, mulDims, normAxis, type Dim } from '../shape.ts';
import { div, mul } from './elementwise.ts';
import { cast, equal } from './misc.ts';
import { expand, reshape } from './shape-ops.ts';
import { requireFloat } from './util.ts';

interface ReduceAttrs {
  axes: number[];
  keepdims: boolean;
}

function reducedShape(x: Tensor, axes: number[], keepdims: boolean): Dim[] {
  const out: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

/** The gradient of a reduction, broadcast back over the reduced axes. */
function spread(g: Tensor, x: Tensor, axes: number[]): Tensor {
  const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return expand(reshape(g, kept), x.shape);
}

function reduceOp(type: string, onnxType: string): OpDef<ReduceAttrs> {
  return {
    type,
    infer(inputs, { axes, keepdims }) {
      const x = inputs[0]!;
      if (type !== 'reduce_sum') requireFloat(type, inputs, x);
      if (new Set(axes).size !== axes.length)
        opError(type, inputs, `repeated axis in ${JSON.stringify(axes)}`);
      return [{ dtype: x.dtype, shape: reducedShape(x, axes, keepdims) }];
    },
    vjp(node, [g], needs) {
      if (!g || !needs[0]) return [null];
      const x = node.inputs[0]!;
      const { axes } = node.attrs;
      if (type === 'reduce_sum') return [spread(g, x, axes)];
      if (type === 'reduce_mean') {
        const count = mulDims(...axes.map((a) => x.shape[a]!));
        return [div(spread(g, x, axes), dimValue(x, count))];
      }
      // max: the gradient goes to the positions equal to the max, split evenly among ties.
      const y = spread(node.outputs[0]!, x, axes);
      const hit = cast(equal(x, y), x.dtype);
      const ties = spread(reduceSum(hit, axes, false), x, axes);
      return [mul(div(hit, ties), spread(g, x, axes))];
    },
    emit(ctx, node) {
      ctx.node(
        onnxType,
        [ctx.name(node.inputs[0]!), ctx.int64(node.attrs.axes)],
        [ctx.name(node.outputs[0]!)],
        { keepdims: node.attrs.keepdims ? 1 : 0 },
      );
    },
  };
}

const sumOp = reduceOp('reduce_sum', 'ReduceSum');
const meanOp = reduceOp('reduce_mean', 'ReduceMean');
const maxOp = reduceOp('reduce_max', 'ReduceMax');

function reduce(op: OpDef<ReduceAttrs>, x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const list = axes === undefined ? x.shape.map((_, i) => i) : Array.isArray(axes) ? axes : [axes];
  const norm = list.map((a) => normAxis(a, x.rank, op.type)).sort((a, b) => a - b);
  return x.graph.apply(op, [x], { axes: norm, keepdims })[0]!;
}

/** Sum over `axes` (all when omitted). */
export const reduceSum = (x: Tensor, axes?: number | number[], keepdims = false) =>
  reduce(sumOp, x, axes, keepdims);
export const reduceMean = (x: Tensor, axes?: number | number[], keepdims = false) =>
  reduce(meanOp, x, axes, keepdims);
export const reduceMax = (x: Tensor, axes?: number | number[], keepdims = false) =>
  reduce(maxOp, x, axes, keepdims);

/** A dimension's value as a 0-d tensor of `like`'s dtype (a constant when static, computed when symbolic). */
export function dimValue(like: Tensor, d: Dim): Tensor {
  return like.graph.apply(dimValueOp, [like], { dim: canonDim(d) })[0]!;
}

const dimValueOp: OpDef<{ dim: Dim }> = {
  type: 'dim_value',
  infer: (inputs) => [{ dtype: inputs[0]!.dtype, shape: [] }],
  vjp: () => [null],
  emit(ctx, node) {
    // Shapes are bound before emission, so the value is a constant of the compiled graph.
    const v = typeof node.attrs.dim === 'number' ? node.attrs.dim : ctx.shapeOfDim(node.attrs.dim);
    ctx.node('Identity', [ctx.scalar(v, node.outputs[0]!.dtype)], [ctx.name(node.outputs[0]!)]);
  },
};
