/**
 * Inverted dropout masks computed inside the graph from a seed: value 0 with probability p, 1/(1−p) otherwise.
 *
 * The random numbers come from a counter-based generator (SplitMix64 on each element's index, in uint64
 * ONNX arithmetic), so a mask depends only on (seed, salt, element index): the same seed gives the same mask in
 * any session, on any run, which is what makes a resumed training run bit-identical — unlike ONNX's stateful
 * random ops, whose sequence restarts with every new session.
 */
import type { EmitContext } from '../emit-context.ts';
import { graphOf, opError, type OpDef, type Tensor } from '../graph.ts';
import { ONNX_DTYPE } from '../dtype.ts';
import { requireFloat } from './util.ts';

const UINT64 = 13;
const GOLDEN = 0x9e3779b97f4a7c15n;
const SEED_MIX = 0xd1b54a32d192ed03n;
const M1 = 0xbf58476d1ce4e5b9n;
const M2 = 0x94d049bb133111ebn;
const MASK64 = (1n << 64n) - 1n;

interface DropoutAttrs {
  p: number;
  salt: number;
}

function u64(ctx: EmitContext, value: bigint): string {
  const name = ctx.fresh('u64');
  ctx.initializers.push({
    name,
    dataType: UINT64,
    dims: [],
    rawData: new Uint8Array(BigUint64Array.of(value).buffer),
  });
  return name;
}

const dropoutMaskOp: OpDef<DropoutAttrs> = {
  type: 'dropout_mask',
  infer(inputs) {
    const [like, seed] = inputs as [Tensor, Tensor];
    requireFloat('dropout_mask', inputs, like);
    if (seed.dtype !== 'int64' || seed.rank !== 0)
      opError('dropout_mask', inputs, 'the seed must be an int64 scalar');
    return [{ dtype: like.dtype, shape: like.shape }];
  },
  vjp: () => [null, null],
  emit(ctx, node) {
    const [like, seed] = node.inputs as [Tensor, Tensor];
    const { p, salt } = node.attrs;
    const shape = ctx.shape(like);
    const n = shape.reduce((a, b) => a * b, 1);
    const op = (type: string, ins: string[], attrs: Record<string, number | string> = {}) => {
      const out = ctx.fresh('dm');
      ctx.node(type, ins, [out], attrs);
      return out;
    };
    const idx = op(
      'Cast',
      [op('Range', [ctx.int64([0], true), ctx.int64([n], true), ctx.int64([1], true)])],
      {
        to: UINT64,
      },
    );
    // base = seed·SEED_MIX + salt; z = (i + 1)·GOLDEN + base; then SplitMix64's finaliser.
    const base = op('Add', [
      op('Mul', [op('Cast', [ctx.name(seed)], { to: UINT64 }), u64(ctx, SEED_MIX)]),
      u64(ctx, BigInt(salt)),
    ]);
    let z = op('Add', [op('Mul', [idx, u64(ctx, GOLDEN)]), op('Add', [base, u64(ctx, GOLDEN)])]);
    const shr = (x: string, k: number) => op('BitShift', [x, u64(ctx, BigInt(k))], { direction: 'RIGHT' });
    z = op('Mul', [op('BitwiseXor', [z, shr(z, 30)]), u64(ctx, M1)]);
    z = op('Mul', [op('BitwiseXor', [z, shr(z, 27)]), u64(ctx, M2)]);
    z = op('BitwiseXor', [z, shr(z, 31)]);
    // u = top 53 bits / 2^53 ∈ [0, 1); keep when u ≥ p.
    const u = op('Mul', [
      op('Cast', [shr(z, 11)], { to: ONNX_DTYPE.float64 }),
      ctx.scalar(2 ** -53, 'float64'),
    ]);
    const keep = op('GreaterOrEqual', [u, ctx.scalar(p, 'float64')]);
    const scaled = op('Mul', [
      op('Cast', [keep], { to: ONNX_DTYPE[like.dtype] }),
      ctx.scalar(1 / (1 - p), like.dtype),
    ]);
    ctx.node('Reshape', [scaled, ctx.int64(shape)], [ctx.name(node.outputs[0]!)]);
  },
};

/** A dropout mask shaped like `like` (see the module comment); `salt` separates masks drawn from one seed. */
export function dropoutMask(like: Tensor, seed: Tensor, p: number, salt = 0): Tensor {
  if (!(p >= 0 && p < 1)) opError('dropout_mask', [like, seed], `p must be in [0, 1), got ${p}`);
  return graphOf('dropout_mask', like, seed).apply(dropoutMaskOp, [like, seed], { p, salt: salt >>> 0 })[0]!;
}

/** The same mask computed in TypeScript (for tests and for callers that apply it outside a graph). */
export function dropoutMaskReference(n: number, seed: bigint, p: number, salt = 0): Float64Array {
  const out = new Float64Array(n);
  const base = (((seed & MASK64) * SEED_MIX) & MASK64) + BigInt(salt >>> 0);
  for (let i = 0; i < n; i++) {
    let z = (BigInt(i + 1) * GOLDEN + base) & MASK64;
    z = ((z ^ (z >> 30n)) * M1) & MASK64;
    z = ((z ^ (z >> 27n)) * M2) & MASK64;
    z = z ^ (z >> 31n);
    const u = Number(z >> 11n) * 2 ** -53;
    out[i] = u >= p ? 1 / (1 - p) : 0;
  }
  return out;
}
