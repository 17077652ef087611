/** Ops that move data without arithmetic: reshape, transpose, concat, slice, split, expand, gather. */
import { DTYPE_BITS, ONNX_DTYPE, type DType } from '../dtype.ts';
import { GraphError, graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import {
  canonDim,
  divDims,
  dimEq,
  mulDims,
  normAxis,
  numel,
  shapeStr,
  type Dim,
  type Shape,
} from '../shape.ts';
import { unbroadcast } from './elementwise.ts';
import { zeros } from './misc.ts';

// ---------- reshape ----------

const reshapeOp: OpDef<{ shape: Dim[] }> = {
  type: 'reshape',
  infer(inputs, { shape }) {
    return [{ dtype: inputs[0]!.dtype, shape }];
  },
  vjp(node, [g], needs) {
    return [g && needs[0] ? reshape(g, node.inputs[0]!.shape) : null];
  },
  emit(ctx, node) {
    ctx.node(
      'Reshape',
      [ctx.name(node.inputs[0]!), ctx.int64(ctx.shape(node.outputs[0]!))],
      [ctx.name(node.outputs[0]!)],
    );
  },
};

/** Reshape (row-major). One entry may be -1: it is inferred from the element count. */
export function reshape(x: Tensor, shape: readonly Dim[]): Tensor {
  const inferAt = shape.indexOf(-1);
  if (shape.indexOf(-1, inferAt + 1) >= 0)
    throw new GraphError(`reshape ${x} to ${shapeStr(shape)}: at most one -1`);
  let out = shape.map(canonDim);
  if (inferAt >= 0) {
    const known = mulDims(...out.filter((_, i) => i !== inferAt));
    const rest = divDims(numel(x.shape), known);
    if (rest === null)
      throw new GraphError(`reshape ${x} to ${shapeStr(shape)}: element counts do not divide`);
    out = out.map((d, i) => (i === inferAt ? rest : d));
  } else if (!dimEq(numel(out), numel(x.shape))) {
    throw new GraphError(
      `reshape ${x} to ${shapeStr(shape)}: element count ${numel(x.shape)} != ${numel(out)}`,
    );
  }
  return x.graph.apply(reshapeOp, [x], { shape: out })[0]!;
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.rank + 1, 'unsqueeze');
  const s = [...x.shape];
  s.splice(a, 0, 1);
  return reshape(x, s);
}

export function squeeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.rank, 'squeeze');
  if (x.shape[a] !== 1) throw new GraphError(`squeeze ${x}: axis ${axis} has size ${x.shape[a]}, not 1`);
  return reshape(
    x,
    x.shape.filter((_, i) => i !== a),
  );
}

// ---------- transpose ----------

const transposeOp: OpDef<{ perm: number[] }> = {
  type: 'transpose',
  infer(inputs, { perm }) {
    const x = inputs[0]!;
    const sorted = [...perm].sort((a, b) => a - b);
    if (perm.length !== x.rank || sorted.some((p, i) => p !== i)) {
      opError('transpose', inputs, `perm ${JSON.stringify(perm)} is not a permutation of rank ${x.rank}`);
    }
    return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null];
    const inv: number[] = [];
    node.attrs.perm.forEach((p, i) => (inv[p] = i));
    return [transpose(g, inv)];
  },
  emit(ctx, node) {
    ctx.node('Transpose', [ctx.name(node.inputs[0]!)], [ctx.name(node.outputs[0]!)], {
      perm: node.attrs.perm,
    });
  },
};

export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  return x.graph.apply(transposeOp, [x], { perm: [...perm] })[0]!;
}

// ---------- concat / split ----------

const concatOp: OpDef<{ axis: number }> = {
  type: 'concat',
  infer(inputs, { axis }) {
    const first = inputs[0]!;
    for (const t of inputs) {
      if (t.dtype !== first.dtype) opError('concat', inputs, 'dtypes differ');
      if (t.rank !== first.rank || t.shape.some((d, i) => i !== axis && !dimEq(d, first.shape[i]!))) {
        opError('concat', inputs, `shapes differ outside axis ${axis}`);
      }
    }
    const shape = [...first.shape];
    shape[axis] = inputs.map((t) => t.shape[axis]!).reduce((a, b) => addDims(a, b));
    return [{ dtype: first.dtype, shape }];
  },
  vjp(node, [g], needs) {
    if (!g) return node.inputs.map(() => null);
    const parts = split(
      g,
      node.attrs.axis,
      node.inputs.map((t) => t.shape[node.attrs.axis]!),
    );
    return parts.map((p, i) => (needs[i] ? p : null));
  },
  emit(ctx, node) {
    ctx.node(
      'Concat',
      node.inputs.map((t) => ctx.name(t)),
      [ctx.name(node.outputs[0]!)],
      {
        axis: node.attrs.axis,
      },
    );
  },
};

/** Sum of two dimensions: numeric when both are numbers; equal symbols double; otherwise unsupported. */
function addDims(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (dimEq(a, b)) return mulDims(2, a);
  throw new GraphError(`cannot add symbolic dimensions ${a} and ${b}; concatenate along a fixed-size axis`);
}

export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new GraphError('concat: no inputs');
  const a = normAxis(axis, xs[0]!.rank, 'concat');
  return graphOf('concat', ...xs).apply(concatOp, xs, { axis: a })[0]!;
}

const splitOp: OpDef<{ axis: number; sizes: Dim[] }> = {
  type: 'split',
  infer(inputs, { axis, sizes }) {
    const x = inputs[0]!;
    const total = sizes.reduce((a, b) => addDims(a, b));
    if (!dimEq(total, x.shape[axis]!)) {
      opError(
        'split',
        inputs,
        `sizes ${JSON.stringify(sizes)} do not add up to ${x.shape[axis]} on axis ${axis}`,
      );
    }
    return sizes.map((s) => {
      const shape = [...x.shape];
      shape[axis] = s;
      return { dtype: x.dtype, shape };
    });
  },
  vjp(node, grads, needs) {
    if (!needs[0] || grads.every((g) => !g)) return [null];
    const parts = node.outputs.map((o, i) => grads[i] ?? zeros(o.graph, o.dtype, o.shape));
    return [concat(parts, node.attrs.axis)];
  },
  emit(ctx, node) {
    const sizes = node.attrs.sizes.map((s) => ctx.shapeOfDim(s));
    ctx.node(
      'Split',
      [ctx.name(node.inputs[0]!), ctx.int64(sizes)],
      node.outputs.map((o) => ctx.name(o)),
      { axis: node.attrs.axis },
    );
  },
};

/** Splits `x` along `axis` into pieces of the given sizes. */
export function split(x: Tensor, axis: number, sizes: readonly Dim[]): Tensor[] {
  const a = normAxis(axis, x.rank, 'split');
  return x.graph.apply(splitOp, [x], { axis: a, sizes: [...sizes] });
}

// ---------- slice (with pad as its gradient) ----------

interface SliceAttrs {
  axis: number;
  start: number;
  end: number;
}

const sliceOp: OpDef<SliceAttrs> = {
  type: 'slice',
  infer(inputs, { axis, start, end }) {
    const x = inputs[0]!;
    const d = x.shape[axis]!;
    if (start < 0 || end <= start || (typeof d === 'number' && end > d)) {
      opError('slice', inputs, `range [${start}, ${end}) is invalid for axis ${axis} of size ${d}`);
    }
    const shape = [...x.shape];
    shape[axis] = end - start;
    return [{ dtype: x.dtype, shape }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null];
    return [g.graph.apply(padOp, [g], { ...node.attrs, full: node.inputs[0]!.shape[node.attrs.axis]! })[0]!];
  },
  emit(ctx, node) {
    const { axis, start, end } = node.attrs;
    ctx.node(
      'Slice',
      [ctx.name(node.inputs[0]!), ctx.int64([start]), ctx.int64([end]), ctx.int64([axis])],
      [ctx.name(node.outputs[0]!)],
    );
  },
};

/** x[..., start:end, ...] along `axis` (step 1). */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  return x.graph.apply(sliceOp, [x], { axis: normAxis(axis, x.rank, 'slice'), start, end })[0]!;
}

/** Zero-pads a slice back to its full axis length: the VJP of slice. */
const padOp: OpDef<SliceAttrs & { full: Dim }> = {
  type: 'pad_slice',
  infer(inputs, { axis, full }) {
    const shape = [...inputs[0]!.shape];
    shape[axis] = full;
    return [{ dtype: inputs[0]!.dtype, shape }];
  },
  emit(ctx, node) {
    const { axis, start, full } = node.attrs;
    const x = node.inputs[0]!;
    const rank = x.rank;
    const after = ctx.shapeOfDim(full) - start - ctx.shape(x)[axis]!;
    const pads = new Array<number>(2 * rank).fill(0);
    pads[axis] = start;
    pads[rank + axis] = after;
    ctx.node('Pad', [ctx.name(x), ctx.int64(pads)], [ctx.name(node.outputs[0]!)], { mode: 'constant' });
  },
};

// ---------- expand ----------

const expandOp: OpDef<{ shape: Dim[] }> = {
  type: 'expand',
  infer(inputs, { shape }) {
    const x = inputs[0]!;
    const lead = shape.length - x.rank;
    if (lead < 0 || x.shape.some((d, i) => d !== 1 && !dimEq(d, shape[lead + i]!))) {
      opError('expand', inputs, `cannot expand to ${shapeStr(shape)}`);
    }
    return [{ dtype: x.dtype, shape }];
  },
  vjp(node, [g], needs) {
    return [g && needs[0] ? unbroadcast(g, node.inputs[0]!.shape) : null];
  },
  emit(ctx, node) {
    ctx.node(
      'Expand',
      [ctx.name(node.inputs[0]!), ctx.int64(ctx.shape(node.outputs[0]!))],
      [ctx.name(node.outputs[0]!)],
    );
  },
};

/** Broadcasts `x` to `shape`. */
export function expand(x: Tensor, shape: Shape): Tensor {
  return x.graph.apply(expandOp, [x], { shape: shape.map(canonDim) })[0]!;
}

// ---------- gather (embedding lookup) and its scatter-add gradient ----------

const gatherOp: OpDef<null> = {
  type: 'gather',
  infer(inputs) {
    const [table, idx] = inputs as [Tensor, Tensor];
    if (idx.dtype !== 'int64' && idx.dtype !== 'int32')
      opError('gather', inputs, 'indices must be int64 or int32');
    return [{ dtype: table.dtype, shape: [...idx.shape, ...table.shape.slice(1)] }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null, null];
    const [table, idx] = node.inputs as [Tensor, Tensor];
    return [g.graph.apply(scatterAddOp, [g, idx], { tableShape: [...table.shape] })[0]!, null];
  },
  emit(ctx, node) {
    ctx.node(
      'Gather',
      node.inputs.map((t) => ctx.name(t)),
      [ctx.name(node.outputs[0]!)],
      { axis: 0 },
    );
  },
};

/** Rows of `table` picked by `indices` (an embedding lookup along axis 0). */
export function gather(table: Tensor, indices: Tensor): Tensor {
  return graphOf('gather', table, indices).apply(gatherOp, [table, indices], null)[0]!;
}

/** Sum of the gradient rows into a zero table at their indices (repeated indices accumulate). */
const scatterAddOp: OpDef<{ tableShape: Dim[] }> = {
  type: 'scatter_add',
  infer: (inputs, { tableShape }) => [{ dtype: inputs[0]!.dtype, shape: tableShape }],
  emit(ctx, node) {
    const [g, idx] = node.inputs as [Tensor, Tensor];
    const shape = ctx.shape(node.outputs[0]!);
    const z = ctx.fresh('zeros');
    ctx.node('ConstantOfShape', [ctx.int64(shape)], [z], {
      value: { tensor: { dataType: ONNX_DTYPE[g.dtype], dims: [1], rawData: zeroBytes(g.dtype) } },
    });
    let i64 = ctx.name(idx);
    if (idx.dtype !== 'int64') {
      i64 = ctx.fresh('idx');
      ctx.node('Cast', [ctx.name(idx)], [i64], { to: 7 });
    }
    const idxCol = ctx.fresh('idxcol');
    ctx.node('Unsqueeze', [i64, ctx.int64([-1])], [idxCol]);
    ctx.node('ScatterND', [z, idxCol, ctx.name(g)], [ctx.name(node.outputs[0]!)], { reduction: 'add' });
  },
};

function zeroBytes(d: DType): Uint8Array {
  return new Uint8Array(DTYPE_BITS[d] / 8);
}
