/**
 * A frozen 4-bit linear layer inside engine graphs: y = x·deq(W)ᵀ, with the gradient to x (never to W).
 *
 * The weight stays 4-bit in the model (uint8 initializers, plus float32 block scales), and no float copy of it
 * outlives the node that needs it:
 *   - forward (float32), int4: MatMulNBits at accuracy level 0;
 *   - forward (float32), NF4, in sessions of moka's native addon (CPU, built; lib/engine/native-session.ts):
 *     moka's ai.moka MatMul4bit for up to MATMUL_4BIT_MAX_ROWS rows (generation: decodes in registers), else
 *     ai.moka Dequantize4bit (one vectorized pass) feeding a Gemm;
 *   - forward (float32), NF4, otherwise: com.microsoft MatMulBnb4 (quant_type 1), which decodes into a scratch
 *     buffer inside the kernel and runs one GEMM, when its layout holds (the bnb NF4 table, whole blocks);
 *   - all of these match decode-then-matmul to float rounding (tests pin it). Otherwise (other dtypes, partial
 *     blocks, a custom table) and in the backward, the weight is decoded into a transient float weight: by
 *     Dequantize4bit in native sessions, else in plain ONNX — each packed byte looked up in a 256 × 2 table of
 *     its two values (one Gather of int32 indices: 2 bytes of indices per weight instead of 8 for int64 per
 *     code), times the block scale;
 *   - backward: dX = dY·deq(W). No ORT 4-bit kernel computes the untransposed product on the CPU (MatMulBnb4 with
 *     transB = 0 returns wrong values in ORT 1.30: its GEMM is hard-wired to transpose B), so a node of its
 *     own decodes the weight again right where the gradient needs it. Sessions disable common-subexpression
 *     elimination (lib/engine/session.ts) so ORT does not merge that decode with a forward one and keep every
 *     layer's float weight alive from the forward to the backward.
 */
import { DTYPE_BITS } from '../engine/dtype.ts';
import { MOKA_OP_DOMAIN } from '../engine/native-session.ts';
import type { EmitContext } from '../engine/emit-context.ts';
import { GraphError, graphOf, opError, type Graph, type OpDef, type Tensor } from '../engine/graph.ts';
import type { WeightData } from '../engine/graph.ts';
import { divDims, numel } from '../engine/shape.ts';
import type { Int4Weight } from './int4.ts';
import { NF4_CODE, type Nf4Weight } from './nf4.ts';
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
  /** NF4: the 16 float32 levels codes decode to. */
  levels?: Float32Array;
  /** int4 asymmetric: packed zero points [n, ceil(kBlocks/2)], low nibble first. */
  zeroPoints?: Tensor;
}

/**
 * Adds a quantized weight's buffers to `graph` as frozen weights named after `name`. `packedData` says where
 * the packed codes are when not in `w.packed` (e.g. their byte range in a checkpoint shard, so that ONNX
 * Runtime reads them from the file and no JavaScript copy is kept).
 */
export function quantizedWeightTensors(
  graph: Graph,
  name: string,
  w: QuantizedWeight,
  packedData: WeightData = w.packed,
): QuantizedWeightTensors {
  if (w.format === 'nf4') return nf4Tensors(graph, name, w, packedData);
  return int4Tensors(graph, name, w, packedData);
}

/** The [256, 2] byte → two values table (see QuantizedWeightTensors.pairs). */
function pairTable(first: (byte: number) => number, second: (byte: number) => number): Float32Array {
  const t = new Float32Array(512);
  for (let b = 0; b < 256; b++) {
    t[2 * b] = first(b);
    t[2 * b + 1] = second(b);
  }
  return t;
}

function nf4Tensors(
  graph: Graph,
  name: string,
  w: Nf4Weight,
  packedData: WeightData,
): QuantizedWeightTensors {
  if (w.shape.length !== 2)
    throw new GraphError(`${name}: a quantized linear weight must be 2-D, got [${w.shape}]`);
  const [n, k] = w.shape as [number, number];
  return {
    format: 'nf4',
    n,
    k,
    blockSize: w.blockSize,
    packed: graph.weight(`${name}.nf4`, 'uint8', [Math.ceil((n * k) / 2)], packedData),
    scales: graph.weight(`${name}.absmax`, 'float32', [w.absmax.length], w.absmax),
    levels: w.quantMap,
  };
}

function int4Tensors(
  graph: Graph,
  name: string,
  w: Int4Weight,
  packedData: WeightData,
): QuantizedWeightTensors {
  const kBlocks = Math.ceil(w.k / w.blockSize);
  return {
    format: 'int4',
    n: w.n,
    k: w.k,
    blockSize: w.blockSize,
    packed: graph.weight(`${name}.int4`, 'uint8', [w.n, kBlocks, w.blockSize / 2], packedData),
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
  /** NF4: the 16 levels codes decode to. */
  levels: number[] | null;
  /** NF4: the forward may use MatMulBnb4 (bnb's table, whole blocks). */
  bnbKernel: boolean;
}

/** Inputs after x: packed, scales, then (int4 asymmetric) zero points. */
function buffersOf(q: QuantizedWeightTensors): Tensor[] {
  return [q.packed, q.scales, ...(q.zeroPoints ? [q.zeroPoints] : [])];
}

/**
 * The [256, 2] float32 table of the two values a packed byte holds, in memory order: NF4 the levels of its
 * high then low nibble (`levels` given), int4 its low then high nibble as codes 0…15.
 */
function emitPairTable(ctx: EmitContext, levels: number[] | null): string {
  const key = levels ? `nf4-pairs:${levels.join(',')}` : 'int4-pairs';
  return ctx.float32Table(key, [256, 2], () =>
    levels
      ? pairTable(
          (b) => levels[b >> 4]!,
          (b) => levels[b & 15]!,
        )
      : pairTable(
          (b) => b & 15,
          (b) => b >> 4,
        ),
  );
}

/**
 * Decodes packed bytes into their values through the [256, 2] pair table: Cast to int32 indices, one Gather,
 * and a reshape that puts each byte's two values side by side. `packedShape` is the bytes' shape; the result
 * has its last dimension doubled.
 */
function emitPairDecode(ctx: EmitContext, packed: string, pairs: string, packedShape: number[]): string {
  const idx = ctx.fresh('idx');
  ctx.node('Cast', [packed], [idx], { to: 6 }); // int32
  const vals = ctx.fresh('pairs');
  ctx.node('Gather', [pairs, idx], [vals], { axis: 0 });
  const shape = [...packedShape];
  shape[shape.length - 1] = shape[shape.length - 1]! * 2;
  const out = ctx.fresh('vals');
  ctx.node('Reshape', [vals, ctx.int64(shape)], [out]);
  return out;
}

/** The 16 NF4 levels as a float32 [16] constant (MatMul4bit's and Dequantize4bit's `code` input). */
function emitCode(ctx: EmitContext, levels: number[]): string {
  return ctx.float32Table(`nf4-code:${levels.join(',')}`, [16], () => Float32Array.from(levels));
}

/**
 * deq(W) as float32 [n, k] by moka's Dequantize4bit (one vectorized pass over the packed bytes). `after` is
 * the activation the product will use: an input the op does not read, so that ORT decodes the weight only
 * once that activation exists (a decode depending on weights alone may be scheduled at the start of the run,
 * with every layer's decoded weight then alive at once).
 */
function emitDequantize4bit(
  ctx: EmitContext,
  attrs: QuantLinearAttrs,
  packed: Tensor,
  scales: Tensor,
  after: string,
): string {
  const out = ctx.fresh('deq');
  ctx.node(
    'Dequantize4bit',
    [ctx.name(packed), ctx.name(scales), emitCode(ctx, attrs.levels!), after],
    [out],
    { K: attrs.k, N: attrs.n, block_size: attrs.blockSize },
    { domain: MOKA_OP_DOMAIN },
  );
  return out;
}

/**
 * Emits deq(W) as a [n, k] tensor of dtype `dt`; returns its name. `after`: the activation the product will
 * use (orders moka's Dequantize4bit; see emitDequantize4bit).
 */
function emitDequantized(
  ctx: EmitContext,
  node: { inputs: readonly Tensor[]; attrs: QuantLinearAttrs },
  offset: number,
  dt: Tensor['dtype'],
  after: string,
): string {
  const { format, n, k, blockSize } = node.attrs;
  const [packed, scales, zeroPoints] = node.inputs.slice(offset) as [Tensor, Tensor, Tensor | undefined];
  if (format === 'nf4' && ctx.nativeKernels && node.attrs.levels && dt === 'float32') {
    return emitDequantize4bit(ctx, node.attrs, packed, scales, after);
  }
  const pairs = emitPairTable(ctx, node.attrs.levels);
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
    const bytes = ctx.shape(packed)[0]!;
    let levels = emitPairDecode(ctx, ctx.name(packed), pairs, [bytes]);
    const padded = nBlocks * blockSize;
    if (bytes * 2 !== padded) {
      // Odd or partial last block: take the real values, pad with 0 to whole blocks (scaled, then dropped).
      const cut = ctx.fresh('cut');
      ctx.node('Slice', [levels, ctx.int64([0]), ctx.int64([total]), ctx.int64([0])], [cut]);
      const pad = ctx.fresh('pad');
      ctx.node('Pad', [cut, ctx.int64([0, padded - total])], [pad], { mode: 'constant' });
      levels = pad;
    }
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
  const qf = emitPairDecode(ctx, ctx.name(packed), pairs, [n, kBlocks, blockSize / 2]);
  let zp: string;
  if (node.attrs.hasZeroPoints) {
    const zc = emitPairDecode(ctx, ctx.name(zeroPoints!), pairs, ctx.shape(zeroPoints!));
    zp = ctx.fresh('zp');
    ctx.node('Slice', [zc, ctx.int64([0]), ctx.int64([kBlocks]), ctx.int64([1])], [zp]);
    const zcol = ctx.fresh('zcol');
    ctx.node('Unsqueeze', [zp, ctx.int64([-1])], [zcol]);
    zp = zcol;
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

/**
 * Rows of x up to which an NF4 product runs moka's own kernel (ai.moka MatMul4bit, native/matmul-4bit.cc) when
 * the session allows it: token-by-token generation and short prompts. It decodes each block of the weight
 * once into registers for all rows, where MatMulBnb4 decodes the whole weight into memory and runs one SGEMM.
 * Measured against MatMulBnb4 on LLaMA-2-7B weights (2 threads, quiet machine; 4096² / 4096 → 11008 /
 * 11008 → 4096): 4.1 / 4.9 / 6.1× faster at 4 rows, 1.3 / 2.4 / 1.8× at 12, 0.96 / 1.8 / 2.1× at 16. Past
 * that an SGEMM's blocking wins; more rows take Dequantize4bit and a Gemm.
 */
export const MATMUL_4BIT_MAX_ROWS = 12;

/** Whether an NF4 forward product runs moka's kernels (MatMul4bit, or Dequantize4bit + Gemm). */
function nativeNf4(ctx: EmitContext, attrs: QuantLinearAttrs, x: Tensor): boolean {
  return ctx.nativeKernels && attrs.format === 'nf4' && !!attrs.levels && x.dtype === 'float32';
}

/** Rows of x once its leading dimensions are flattened (tokens × batch). */
function tokenRows(ctx: EmitContext, x: Tensor): number {
  return ctx
    .shape(x)
    .slice(0, -1)
    .reduce((a, b) => a * b, 1);
}

function flattenTokens(ctx: EmitContext, x: Tensor, k: number): string {
  const t = tokenRows(ctx, x);
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
    } else if (nativeNf4(ctx, node.attrs, x)) {
      const [packed, scales] = node.inputs.slice(1) as [Tensor, Tensor];
      if (tokenRows(ctx, x) <= MATMUL_4BIT_MAX_ROWS) {
        ctx.node(
          'MatMul4bit',
          [x2, ctx.name(packed), ctx.name(scales), emitCode(ctx, node.attrs.levels!)],
          [y2],
          { K: k, N: n, block_size: blockSize },
          { domain: MOKA_OP_DOMAIN },
        );
      } else {
        // Many rows: decode once (fast), then ORT's SGEMM; the float weight lives only until the Gemm is done.
        const w = emitDequantize4bit(ctx, node.attrs, packed, scales, x2);
        ctx.node('Gemm', [x2, w], [y2], { transB: 1 });
      }
    } else if (node.attrs.bnbKernel && x.dtype === 'float32') {
      const [packed, scales] = node.inputs.slice(1) as [Tensor, Tensor];
      ctx.node(
        'MatMulBnb4',
        [x2, ctx.name(packed), ctx.name(scales)],
        [y2],
        { K: k, N: n, block_size: blockSize, quant_type: 1 },
        { domain: 'com.microsoft' },
      );
    } else {
      const w = emitDequantized(ctx, node, 1, x.dtype, x2);
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
    const g2 = flattenTokens(ctx, g, n);
    const w = emitDequantized(ctx, node, 1, g.dtype, g2);
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
    levels: q.levels ? Array.from(q.levels) : null,
    bnbKernel:
      q.format === 'nf4' &&
      !!q.levels &&
      q.levels.every((v, i) => Object.is(v, NF4_CODE[i])) &&
      (q.n * q.k) % q.blockSize === 0,
  };
  const inputs = [x, ...buffersOf(q)];
  return graphOf('quant_linear', ...inputs).apply(quantLinearOp, inputs, attrs)[0]!;
}
