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

const afterOp: OpDef<null> = {
  type: 'after',
  infer: (inputs) => [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }],
  vjp: (node, [g]) => [g ?? null, ...node.inputs.slice(1).map(() => null)],
  emit(ctx, node) {
    const [x, ...deps] = node.inputs as [Tensor, ...Tensor[]];
    const n = ctx.shape(x).reduce((a, b) => a * b, 1);
    const xFlat = ctx.fresh('flat');
    ctx.node('Reshape', [ctx.name(x), ctx.int64([n])], [xFlat]);
    // No values of a dep are read: an empty slice of it, concatenated to x, is a data edge and nothing else.
    const nones = deps.map((dep) => {
      const depFlat = ctx.fresh('dep');
      ctx.node('Reshape', [ctx.name(dep), ctx.int64([-1])], [depFlat]);
      let none = ctx.fresh('none');
      ctx.node('Slice', [depFlat, ctx.int64([0]), ctx.int64([0]), ctx.int64([0])], [none]);
      if (dep.dtype !== x.dtype) {
        const c = ctx.fresh('none');
        ctx.node('Cast', [none], [c], { to: ONNX_DTYPE[x.dtype] });
        none = c;
      }
      return none;
    });
    const joined = ctx.fresh('joined');
    ctx.node('Concat', [xFlat, ...nones], [joined], { axis: 0 });
    ctx.node('Reshape', [joined, ctx.int64(ctx.shape(x))], [ctx.name(node.outputs[0]!)]);
  },
};

/**
 * The value of x (an exact copy, gradient passed through to x), computed only once every tensor of `deps`
 * has been: data edges that make ONNX Runtime schedule what reads the result after their producers (ORT
 * orders nodes by a depth-first walk from the outputs, which otherwise may run a node early and keep its
 * output alive, or late and keep its inputs alive). Recomputation in the backward uses it so a layer's
 * forward is redone when its gradient arrives, and the previous layer's parameter gradients are finished first.
 */
export function after(x: Tensor, deps: Tensor | readonly Tensor[]): Tensor {
  const list = Array.isArray(deps) ? [...deps] : [deps as Tensor];
  return graphOf('after', x, ...list).apply(afterOp, [x, ...list], null)[0]!;
}
