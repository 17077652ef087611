/**
 * A frozen 4-bit linear layer inside engine graphs: y = x·deq(W)ᵀ, with the gradient to x (never to W).
 *
 * The weight stays 4-bit in the model (uint8 initializers, plus float32 block scales). Each use decodes it
 * in plain ONNX — BitShift/BitwiseAnd to 4-bit codes, the NF4 table (Gather) or (q − zero point) for int4,
 * times the block scale — into a transient float weight, exact up to float rounding:
 *   - forward: int4 uses com.microsoft MatMulNBits at accuracy level 0 (exact, no float copy at all);
 *     NF4 has no affine form, so it decodes and runs Gemm(transB);
 *   - backward: a separate node decodes again and computes dX = dY·deq(W). Recomputing instead of keeping the
 *     forward's decoded weight means at most a layer's worth of float weights is alive at any time.
 */
import { DTYPE_BITS } from '../engine/dtype.ts';
import type { EmitContext } from '../engine/emit-context.ts';
import { GraphError, graphOf, opError, type Graph, type OpDef, type Tensor } from '../engine/graph.ts';
import { divDims, numel } from '../engine/shape.ts';
import type { Int4Weight } from './int4.ts';
import type { Nf4Weight } from './nf4.ts';
import type { QuantizedWeight } from './quantized-weight.ts';

/** The graph tensors of a 4-bit weight of logical shape [n, k] (out, in). */
export interface QuantizedWeightTensors {
  format: 'nf4' | 'int4';
  n: number;
  k: number;
  blockSize: number;
  /** uint8 codes: NF4 flat ceil(n·k/2), high nibble first; int4 [n, kBlocks, blockSize/2], low nibble first. */
  packed: Tensor;
  /** float32: NF4 absmax [ceil(n·k/blockSize)]; int4 scales [n·kBlocks]. */
  scales: Tensor;
  /** NF4: the 16 float32 levels. */
  table?: Tensor;
  /** int4 asymmetric: packed zero points [n, ceil(kBlocks/2)], low nibble first. */
  zeroPoints?: Tensor;
}

/** Adds a quantized weight's buffers to `graph` as frozen weights named after `name`. */
export function quantizedWeightTensors(
  graph: Graph,
  name: string,
  w: QuantizedWeight,
): QuantizedWeightTensors {
  if (w.format === 'nf4') return nf4Tensors(graph, name, w);
  return int4Tensors(graph, name, w);
}

function nf4Tensors(graph: Graph, name: string, w: Nf4Weight): QuantizedWeightTensors {
  if (w.shape.length !== 2)
    throw new GraphError(`${name}: a quantized linear weight must be 2-D, got [${w.shape}]`);
  const [n, k] = w.shape as [number, number];
  return {
    format: 'nf4',
    n,
    k,
    blockSize: w.blockSize,
    packed: graph.weight(`${name}.nf4`, 'uint8', [w.packed.length], w.packed),
    scales: graph.weight(`${name}.absmax`, 'float32', [w.absmax.length], w.absmax),
    table: graph.weight(`${name}.quant_map`, 'float32', [16], w.quantMap),
  };
}

function int4Tensors(graph: Graph, name: string, w: Int4Weight): QuantizedWeightTensors {
  const kBlocks = Math.ceil(w.k / w.blockSize);
  return {
    format: 'int4',
    n: w.n,
    k: w.k,
    blockSize: w.blockSize,
    packed: graph.weight(`${name}.int4`, 'uint8', [w.n, kBlocks, w.blockSize / 2], w.packed),
    scales: graph.weight(`${name}.scales`, 'float32', [w.n * kBlocks], w.scales),
    ...(w.zeroPoints
      ? {
          zeroPoints: graph.weight(
            `${name}.zero_points`,
            'uint8',
            [w.n, Math.ceil(kBlocks / 2)],
            w.zeroPoints,
          ),
        }
      : {}),
  };
}

interface QuantLinearAttrs {
  format: 'nf4' | 'int4';
  n: number;
  k: number;
  blockSize: number;
  hasZeroPoints: boolean;
}

function buffersOf(q: QuantizedWeightTensors): Tensor[] {
  return q.format === 'nf4'
    ? [q.packed, q.scales, q.table!]
    : [q.packed, q.scales, ...(q.zeroPoints ? [q.zeroPoints] : [])];
}

/** Unpacks uint8 bytes into 4-bit codes (as int64 indices or floats), in the format's nibble order. */
function emitCodes(ctx: EmitContext, packed: string, highFirst: boolean, packedShape: number[]): string {
  const hi = ctx.fresh('hi');
  ctx.node('BitShift', [packed, ctx.uint8Scalar(4)], [hi], { direction: 'RIGHT' });
  const lo = ctx.fresh('lo');
  ctx.node('BitwiseAnd', [packed, ctx.uint8Scalar(15)], [lo]);
  const a = ctx.fresh('a');
  const b = ctx.fresh('b');
  ctx.node('Unsqueeze', [highFirst ? hi : lo, ctx.int64([-1])], [a]);
  ctx.node('Unsqueeze', [highFirst ? lo : hi, ctx.int64([-1])], [b]);
  const pair = ctx.fresh('pair');
  ctx.node('Concat', [a, b], [pair], { axis: -1 });
  const codes = ctx.fresh('codes');
  const shape = [...packedShape];
  shape[shape.length - 1] = shape[shape.length - 1]! * 2;
  ctx.node('Reshape', [pair, ctx.int64(shape)], [codes]);
  return codes;
}

/** Emits deq(W) as a [n, k] tensor of dtype `dt`; returns its name. */
function emitDequantized(
  ctx: EmitContext,
  node: { inputs: readonly Tensor[]; attrs: QuantLinearAttrs },
  offset: number,
  dt: Tensor['dtype'],
): string {
  const { format, n, k, blockSize } = node.attrs;
  const [packed, scales, third] = node.inputs.slice(offset) as [Tensor, Tensor, Tensor | undefined];
  const to = dt === 'float64' ? 11 : dt === 'float16' ? 10 : 1;
  const castTo = (name: string) => {
    if (dt === 'float32') return name;
    const c = ctx.fresh('cast');
    ctx.node('Cast', [name], [c], { to });
    return c;
  };
  const w = ctx.fresh('w');
  if (format === 'nf4') {
    const total = n * k;
    const nBlocks = Math.ceil(total / blockSize);
    let codes = emitCodes(ctx, ctx.name(packed), true, [ctx.shape(packed)[0]!]);
    const idx = ctx.fresh('idx');
    ctx.node('Cast', [codes], [idx], { to: 7 });
    codes = idx;
    const padded = nBlocks * blockSize;
    const have = ctx.shape(packed)[0]! * 2;
    if (have !== padded) {
      // Odd or partial last block: take the real codes, pad with code 0 to whole blocks (scaled, then dropped).
      const cut = ctx.fresh('cut');
      ctx.node('Slice', [codes, ctx.int64([0]), ctx.int64([Math.min(have, total)]), ctx.int64([0])], [cut]);
      const pad = ctx.fresh('pad');
      ctx.node('Pad', [cut, ctx.int64([0, padded - Math.min(have, total)])], [pad], { mode: 'constant' });
      codes = pad;
    }
    const levels = ctx.fresh('levels');
    ctx.node('Gather', [ctx.name(third!), codes], [levels], { axis: 0 });
    const blocks = ctx.fresh('blocks');
    ctx.node('Reshape', [levels, ctx.int64([nBlocks, blockSize])], [blocks]);
    const col = ctx.fresh('absmax');
    ctx.node('Unsqueeze', [ctx.name(scales), ctx.int64([-1])], [col]);
    const scaled = ctx.fresh('scaled');
    ctx.node('Mul', [blocks, col], [scaled]);
    let flat = scaled;
    if (padded !== total) {
      const f = ctx.fresh('flat');
      ctx.node('Reshape', [scaled, ctx.int64([padded])], [f]);
      flat = ctx.fresh('trim');
      ctx.node('Slice', [f, ctx.int64([0]), ctx.int64([total]), ctx.int64([0])], [flat]);
    }
    const w32 = ctx.fresh('w32');
    ctx.node('Reshape', [flat, ctx.int64([n, k])], [w32]);
    ctx.node('Identity', [castTo(w32)], [w]);
    return w;
  }
  // int4: q − zp, times the block scale; rows padded to whole blocks.
  const kBlocks = Math.ceil(k / blockSize);
  const codes = emitCodes(ctx, ctx.name(packed), false, [n, kBlocks, blockSize / 2]);
  const qf = ctx.fresh('qf');
  ctx.node('Cast', [codes], [qf], { to: 1 });
  let zp: string;
  if (node.attrs.hasZeroPoints) {
    const zc = emitCodes(ctx, ctx.name(third!), false, ctx.shape(third!));
    const zcut = ctx.fresh('zcut');
    ctx.node('Slice', [zc, ctx.int64([0]), ctx.int64([kBlocks]), ctx.int64([1])], [zcut]);
    const zf = ctx.fresh('zf');
    ctx.node('Cast', [zcut], [zf], { to: 1 });
    zp = ctx.fresh('zp');
    ctx.node('Unsqueeze', [zf, ctx.int64([-1])], [zp]);
  } else zp = ctx.scalar(8, 'float32');
  const centered = ctx.fresh('centered');
  ctx.node('Sub', [qf, zp], [centered]);
  const s3 = ctx.fresh('s3');
  ctx.node('Reshape', [ctx.name(scales), ctx.int64([n, kBlocks, 1])], [s3]);
  const scaled = ctx.fresh('scaled');
  ctx.node('Mul', [centered, s3], [scaled]);
  let rows = ctx.fresh('rows');
  ctx.node('Reshape', [scaled, ctx.int64([n, kBlocks * blockSize])], [rows]);
  if (kBlocks * blockSize !== k) {
    const cut = ctx.fresh('cut');
    ctx.node('Slice', [rows, ctx.int64([0]), ctx.int64([k]), ctx.int64([1])], [cut]);
    rows = cut;
  }
  ctx.node('Identity', [castTo(rows)], [w]);
  return w;
}

function flattenTokens(ctx: EmitContext, x: Tensor, k: number): string {
  const t = ctx
    .shape(x)
    .slice(0, -1)
    .reduce((a, b) => a * b, 1);
  const out = ctx.fresh('x2');
  ctx.node('Reshape', [ctx.name(x), ctx.int64([t, k])], [out]);
  return out;
}

const quantLinearOp: OpDef<QuantLinearAttrs> = {
  type: 'quant_linear',
  infer(inputs, { n, k }) {
    const x = inputs[0]!;
    if (x.dtype !== 'float32' && x.dtype !== 'float64' && x.dtype !== 'float16') {
      opError('quant_linear', inputs, 'x must be floating-point');
    }
    if (x.shape[x.rank - 1] !== k)
      opError('quant_linear', inputs, `x must end in the weight's ${k} input features`);
    for (const t of inputs.slice(1)) {
      if (t.kind !== 'weight')
        opError('quant_linear', inputs, 'the quantized buffers must be frozen weights');
    }
    if (DTYPE_BITS[inputs[1]!.dtype] !== 8) opError('quant_linear', inputs, 'packed codes must be uint8');
    return [{ dtype: x.dtype, shape: [...x.shape.slice(0, -1), n] }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return node.inputs.map(() => null);
    const dx = graphOf('quant_linear_grad', g, ...node.inputs.slice(1)).apply(
      quantLinearGradOp,
      [g, ...node.inputs.slice(1)],
      node.attrs,
    )[0]!;
    return [dx, ...node.inputs.slice(1).map(() => null)];
  },
  emit(ctx, node) {
    const x = node.inputs[0]!;
    const { format, n, k, blockSize } = node.attrs;
    const out = ctx.name(node.outputs[0]!);
    const y2 = ctx.fresh('y2');
    const x2 = flattenTokens(ctx, x, k);
    if (format === 'int4' && x.dtype === 'float32') {
      const [packed, scales, zps] = node.inputs.slice(1) as [Tensor, Tensor, Tensor | undefined];
      const ins = [x2, ctx.name(packed), ctx.name(scales), ...(zps ? [ctx.name(zps)] : [])];
      ctx.node(
        'MatMulNBits',
        ins,
        [y2],
        { K: k, N: n, bits: 4, block_size: blockSize, accuracy_level: 0 },
        { domain: 'com.microsoft' },
      );
    } else {
      const w = emitDequantized(ctx, node, 1, x.dtype);
      ctx.node('Gemm', [x2, w], [y2], { transB: 1 });
    }
    ctx.node('Reshape', [y2, ctx.int64(ctx.shape(node.outputs[0]!))], [out]);
  },
};

/**
 * dX = dY·deq(W), decoding the weight again (inputs: g, then the buffers). It does not take x, whose shape is
 * dY's with k features: an input would keep the forward activation alive until the backward for nothing.
 */
const quantLinearGradOp: OpDef<QuantLinearAttrs> = {
  type: 'quant_linear_grad',
  infer: (inputs, { k }) => [{ dtype: inputs[0]!.dtype, shape: [...inputs[0]!.shape.slice(0, -1), k] }],
  emit(ctx, node) {
    const g = node.inputs[0]!;
    const { n } = node.attrs;
    const w = emitDequantized(ctx, node, 1, g.dtype);
    const g2 = flattenTokens(ctx, g, n);
    const dx2 = ctx.fresh('dx2');
    ctx.node('MatMul', [g2, w], [dx2]);
    ctx.node('Reshape', [dx2, ctx.int64(ctx.shape(node.outputs[0]!))], [ctx.name(node.outputs[0]!)]);
  },
};

/** y = x·deq(W)ᵀ for x [..., k] → [..., n]; differentiable in x only. */
export function quantizedLinear(x: Tensor, q: QuantizedWeightTensors): Tensor {
  if (divDims(numel(x.shape), q.k) === null)
    throw new GraphError(`quantizedLinear: ${x} does not end in ${q.k}`);
  const attrs: QuantLinearAttrs = {
    format: q.format,
    n: q.n,
    k: q.k,
    blockSize: q.blockSize,
    hasZeroPoints: !!q.zeroPoints,
  };
  const inputs = [x, ...buffersOf(q)];
  return graphOf('quant_linear', ...inputs).apply(quantLinearOp, inputs, attrs)[0]!;
}
