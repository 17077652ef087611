/**
 * Elementwise ops with numpy broadcasting: add, sub, mul, div, pow, and the unary maths a decoder, its loss
 * and AdamW need. Gradients of broadcast inputs are summed back to the input's shape (`unbroadcast`).
 */
import { allocHost, float32ToFloat16Bits, type DType } from '../dtype.ts';
import { GraphError, graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import { broadcastShapes, shapeEq, type Shape } from '../shape.ts';
import { reduceSum } from './reduce.ts';
import { reshape } from './shape-ops.ts';
import { requireFloat, requireSameDtype } from './util.ts';

// ---------- constants ----------

/** A 0-d constant of the given dtype, broadcastable against anything. */
export function scalar(like: Tensor, value: number, dtype: DType = like.dtype): Tensor {
  const data = allocHost(dtype, 1);
  if (data instanceof BigInt64Array) data[0] = BigInt(value);
  else if (dtype === 'float16') data[0] = float32ToFloat16Bits(value);
  else if (dtype === 'bfloat16')
    throw new GraphError('scalar: bfloat16 constants are not supported; cast a float32 one');
  else data[0] = value;
  return like.graph.constant(dtype, [], data);
}

// ---------- binary ----------

type BinaryKind = 'Add' | 'Sub' | 'Mul' | 'Div' | 'Pow';

function binaryOp(kind: BinaryKind): OpDef<null> {
  return {
    type: kind.toLowerCase(),
    infer(inputs) {
      const [a, b] = inputs as [Tensor, Tensor];
      const dtype = requireSameDtype(this.type, inputs, a, b);
      const shape = broadcastShapes(a.shape, b.shape);
      if (!shape) opError(this.type, inputs, 'shapes do not broadcast');
      return [{ dtype, shape }];
    },
    vjp(node, [g], needs) {
      const [a, b] = node.inputs as [Tensor, Tensor];
      const y = node.outputs[0]!;
      if (!g) return [null, null];
      let ga: Tensor | null = null;
      let gb: Tensor | null = null;
      switch (kind) {
        case 'Add':
          ga = needs[0] ? g : null;
          gb = needs[1] ? g : null;
          break;
        case 'Sub':
          ga = needs[0] ? g : null;
          gb = needs[1] ? neg(g) : null;
          break;
        case 'Mul':
          ga = needs[0] ? mul(g, b) : null;
          gb = needs[1] ? mul(g, a) : null;
          break;
        case 'Div':
          // y = a / b: da = g / b, db = -g * y / b
          ga = needs[0] ? div(g, b) : null;
          gb = needs[1] ? neg(div(mul(g, y), b)) : null;
          break;
        case 'Pow':
          // y = a^b: da = g * b * a^(b-1) (= g*b*y/a, but that fails at a = 0), db = g * y * log(a)
          ga = needs[0] ? mul(g, mul(b, pow(a, sub(b, scalar(b, 1))))) : null;
          gb = needs[1] ? mul(g, mul(y, log(a))) : null;
          break;
      }
      return [ga && unbroadcast(ga, a.shape), gb && unbroadcast(gb, b.shape)];
    },
    emit(ctx, node) {
      ctx.node(
        kind,
        node.inputs.map((t) => ctx.name(t)),
        [ctx.name(node.outputs[0]!)],
      );
    },
  };
}

const addOp = binaryOp('Add');
const subOp = binaryOp('Sub');
const mulOp = binaryOp('Mul');
const divOp = binaryOp('Div');
const powOp = binaryOp('Pow');

function asTensor(like: Tensor, v: Tensor | number): Tensor {
  return typeof v === 'number' ? scalar(like, v) : v;
}
function bin(op: OpDef<null>, a: Tensor | number, b: Tensor | number): Tensor {
  const ta = typeof a === 'number' ? asTensor(b as Tensor, a) : a;
  const tb = asTensor(ta, b);
  return graphOf(op.type, ta, tb).apply(op, [ta, tb], null)[0]!;
}

export const add = (a: Tensor | number, b: Tensor | number) => bin(addOp, a, b);
export const sub = (a: Tensor | number, b: Tensor | number) => bin(subOp, a, b);
export const mul = (a: Tensor | number, b: Tensor | number) => bin(mulOp, a, b);
export const div = (a: Tensor | number, b: Tensor | number) => bin(divOp, a, b);
export const pow = (a: Tensor | number, b: Tensor | number) => bin(powOp, a, b);

/** Sums a broadcast gradient back to `shape`: over leading axes it lacks and axes where it has size 1. */
export function unbroadcast(g: Tensor, shape: Shape): Tensor {
  if (shapeEq(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) axes.push(i);
  }
  const summed = axes.length ? reduceSum(g, axes, true) : g;
  return shapeEq(summed.shape, shape) ? summed : reshape(summed, shape);
}

// ---------- unary ----------

interface UnaryDef {
  type: string;
  /** ONNX op types applied in sequence (e.g. rsqrt = Sqrt then Reciprocal). */
  onnx: string[];
  /** dx from (x, y, g). */
  grad: (x: Tensor, y: Tensor, g: Tensor) => Tensor;
}

function unaryOp(def: UnaryDef): OpDef<null> {
  return {
    type: def.type,
    infer(inputs) {
      const x = inputs[0]!;
      requireFloat(def.type, inputs, x);
      return [{ dtype: x.dtype, shape: x.shape }];
    },
    vjp(node, [g], needs) {
      if (!g || !needs[0]) return [null];
      return [def.grad(node.inputs[0]!, node.outputs[0]!, g)];
    },
    emit(ctx, node) {
      let cur = ctx.name(node.inputs[0]!);
      def.onnx.forEach((t, i) => {
        const out = i === def.onnx.length - 1 ? ctx.name(node.outputs[0]!) : ctx.fresh(t);
        ctx.node(t, [cur], [out]);
        cur = out;
      });
    },
  };
}

const negOp = unaryOp({ type: 'neg', onnx: ['Neg'], grad: (_x, _y, g) => neg(g) });
const expOp = unaryOp({ type: 'exp', onnx: ['Exp'], grad: (_x, y, g) => mul(g, y) });
const logOp = unaryOp({ type: 'log', onnx: ['Log'], grad: (x, _y, g) => div(g, x) });
const sqrtOp = unaryOp({ type: 'sqrt', onnx: ['Sqrt'], grad: (_x, y, g) => div(mul(g, 0.5), y) });
// rsqrt: y = x^-1/2, dy/dx = -0.5 * y^3
const rsqrtOp = unaryOp({
  type: 'rsqrt',
  onnx: ['Sqrt', 'Reciprocal'],
  grad: (_x, y, g) => mul(g, mul(-0.5, mul(y, mul(y, y)))),
});
const reciprocalOp = unaryOp({
  type: 'reciprocal',
  onnx: ['Reciprocal'],
  grad: (_x, y, g) => neg(mul(g, mul(y, y))),
});
const sigmoidOp = unaryOp({
  type: 'sigmoid',
  onnx: ['Sigmoid'],
  grad: (_x, y, g) => mul(g, mul(y, sub(1, y))),
});
const tanhOp = unaryOp({ type: 'tanh', onnx: ['Tanh'], grad: (_x, y, g) => mul(g, sub(1, mul(y, y))) });
const absOp = unaryOp({ type: 'abs', onnx: ['Abs'], grad: (x, _y, g) => mul(g, sign(x)) });

/** silu(x) = x·sigmoid(x); d/dx = s·(1 + x·(1 − s)). Emitted as Sigmoid + Mul (ORT fuses it on CPU/CUDA). */
const siluOp: OpDef<null> = {
  type: 'silu',
  infer(inputs) {
    const x = inputs[0]!;
    requireFloat('silu', inputs, x);
    return [{ dtype: x.dtype, shape: x.shape }];
  },
  vjp(node, [g], needs) {
    if (!g || !needs[0]) return [null];
    const x = node.inputs[0]!;
    const s = sigmoid(x);
    return [mul(g, mul(s, add(1, mul(x, sub(1, s)))))];
  },
  emit(ctx, node) {
    const xt = node.inputs[0]!;
    const x = ctx.name(xt);
    if (xt.dtype !== 'float32') {
      // ORT fuses Sigmoid+Mul into QuickGelu, which has only a float32 kernel on CPU: use x / (1 + e^−x).
      const nx = ctx.fresh('nx');
      const e = ctx.fresh('e');
      const d = ctx.fresh('d');
      ctx.node('Neg', [x], [nx]);
      ctx.node('Exp', [nx], [e]);
      ctx.node('Add', [e, ctx.scalar(1, xt.dtype)], [d]);
      ctx.node('Div', [x, d], [ctx.name(node.outputs[0]!)]);
      return;
    }
    const s = ctx.fresh('sig');
    ctx.node('Sigmoid', [x], [s]);
    ctx.node('Mul', [x, s], [ctx.name(node.outputs[0]!)]);
  },
};

const signOp: OpDef<null> = {
  type: 'sign',
  infer: (inputs) => [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }],
  vjp: () => [null],
  emit(ctx, node) {
    ctx.node('Sign', [ctx.name(node.inputs[0]!)], [ctx.name(node.outputs[0]!)]);
  },
};

const un = (op: OpDef<null>) => (x: Tensor) => x.graph.apply(op, [x], null)[0]!;
export const neg = un(negOp);
export const exp = un(expOp);
export const log = un(logOp);
export const sqrt = un(sqrtOp);
export const rsqrt = un(rsqrtOp);
export const reciprocal = un(reciprocalOp);
export const sigmoid = un(sigmoidOp);
export const silu = un(siluOp);
export const tanh = un(tanhOp);
export const abs = un(absOp);
export const sign = un(signOp);
