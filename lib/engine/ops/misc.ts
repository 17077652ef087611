/** Casts, comparisons, selection and zeros. */
import { isFloat, ONNX_DTYPE, type DType } from '../dtype.ts';
import { graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import { broadcastShapes, type Dim, type Shape } from '../shape.ts';
import { scalarTensorProto } from '../emit-context.ts';
import { unbroadcast } from './elementwise.ts';
import { requireSameDtype } from './util.ts';

const castOp: OpDef<{ to: DType }> = {
  type: 'cast',
  infer: (inputs, { to }) => [{ dtype: to, shape: inputs[0]!.shape }],
  vjp(node, [g], needs) {
    const x = node.inputs[0]!;
    if (!g || !needs[0] || !isFloat(x.dtype)) return [null];
    return [cast(g, x.dtype)];
  },
  emit(ctx, node) {
    ctx.node('Cast', [ctx.name(node.inputs[0]!)], [ctx.name(node.outputs[0]!)], {
      to: ONNX_DTYPE[node.attrs.to],
    });
  },
};

export function cast(x: Tensor, to: DType): Tensor {
  if (x.dtype === to) return x;
  return x.graph.apply(castOp, [x], { to })[0]!;
}

const equalOp: OpDef<null> = {
  type: 'equal',
  infer(inputs) {
    const [a, b] = inputs as [Tensor, Tensor];
    requireSameDtype('equal', inputs, a, b);
    const shape = broadcastShapes(a.shape, b.shape);
    if (!shape) opError('equal', inputs, 'shapes do not broadcast');
    return [{ dtype: 'bool', shape }];
  },
  vjp: () => [null, null],
  emit(ctx, node) {
    ctx.node(
      'Equal',
      node.inputs.map((t) => ctx.name(t)),
      [ctx.name(node.outputs[0]!)],
    );
  },
};

/** Elementwise a == b as a bool tensor (not differentiable). */
export function equal(a: Tensor, b: Tensor): Tensor {
  return graphOf('equal', a, b).apply(equalOp, [a, b], null)[0]!;
}

const notOp: OpDef<null> = {
  type: 'not',
  infer(inputs) {
    if (inputs[0]!.dtype !== 'bool') opError('not', inputs, 'expected a bool tensor');
    return [{ dtype: 'bool', shape: inputs[0]!.shape }];
  },
  vjp: () => [null],
  emit(ctx, node) {
    ctx.node('Not', [ctx.name(node.inputs[0]!)], [ctx.name(node.outputs[0]!)]);
  },
};

export function not(x: Tensor): Tensor {
  return x.graph.apply(notOp, [x], null)[0]!;
}

const whereOp: OpDef<null> = {
  type: 'where',
  infer(inputs) {
    const [c, a, b] = inputs as [Tensor, Tensor, Tensor];
    if (c.dtype !== 'bool') opError('where', inputs, `the condition must be bool, got ${c.dtype}`);
    const dtype = requireSameDtype('where', inputs, a, b);
    const ab = broadcastShapes(a.shape, b.shape);
    const shape = ab && broadcastShapes(c.shape, ab);
    if (!shape) opError('where', inputs, 'shapes do not broadcast');
    return [{ dtype, shape }];
  },
  vjp(node, [g], needs) {
    if (!g) return [null, null, null];
    const [c, a, b] = node.inputs as [Tensor, Tensor, Tensor];
    const zero = zeros(g.graph, g.dtype, []);
    return [
      null,
      needs[1] ? unbroadcast(where(c, g, zero), a.shape) : null,
      needs[2] ? unbroadcast(where(c, zero, g), b.shape) : null,
    ];
  },
  emit(ctx, node) {
    ctx.node(
      'Where',
      node.inputs.map((t) => ctx.name(t)),
      [ctx.name(node.outputs[0]!)],
    );
  },
};

/** Elementwise `cond ? a : b` (a mask); gradients flow to the selected side. */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  return graphOf('where', cond, a, b).apply(whereOp, [cond, a, b], null)[0]!;
}

const fillOp: OpDef<{ dtype: DType; shape: Shape; value: number }> = {
  type: 'fill',
  infer: (_inputs, { dtype, shape }) => [{ dtype, shape }],
  emit(ctx, node) {
    const { dtype, value } = node.attrs;
    const shape = ctx.shape(node.outputs[0]!);
    ctx.node('ConstantOfShape', [ctx.int64(shape)], [ctx.name(node.outputs[0]!)], {
      value: { tensor: { ...scalarTensorProto('value', value, dtype), dims: [1] } },
    });
  },
};

/** A tensor filled with `value` (shape may be symbolic; it is materialised by ORT, not stored in the model). */
export function fill(graph: Tensor['graph'], dtype: DType, shape: readonly Dim[], value: number): Tensor {
  // A fill needs no inputs; the graph is passed explicitly.
  return graph.apply(fillOp, [], { dtype, shape: [...shape], value })[0]!;
}

export function zeros(graph: Tensor['graph'], dtype: DType, shape: readonly Dim[]): Tensor {
  return fill(graph, dtype, shape, 0);
}

const stopGradientOp: OpDef<null> = {
  type: 'stop_gradient',
  infer: (inputs) => [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }],
  vjp: () => [null],
  emit(ctx, node) {
    ctx.node('Identity', [ctx.name(node.inputs[0]!)], [ctx.name(node.outputs[0]!)]);
  },
};

/** The value of x, treated as a constant by `grad` (e.g. DoRA's detached weight norm). */
export function stopGradient(x: Tensor): Tensor {
  return x.graph.apply(stopGradientOp, [x], null)[0]!;
}
