/**
 * The fused MoKA update: y = Σ_i α_i · x·(A_i ⊗ B_i)ᵀ with α = softmax(gate logits), computed without ever
 * forming a d_out × d_in matrix.
 *
 * Convention (row-major, identical to torch.kron): for a token x ∈ R^n viewed as X ∈ R^{n_a×n_b},
 * x·kron(A, B)ᵀ = flatten(A·X·Bᵀ). Components of one shape (m_a, n_a, m_b, n_b) are stacked into
 * A_s [K, m_a, n_a] and B_s [K, m_b, n_b] and computed together with two GEMMs over all T tokens:
 *
 *   Z  = X₂ · B_catᵀ        X₂ = x as [T·n_a, n_b],  B_cat = B_s as [K·m_b, n_b]      → [T, n_a, K, m_b]
 *   Zₛ = Z with the (n_a, K) axes swapped, as [T, K·n_a, m_b]   (a move of contiguous m_b-blocks; none if K = 1)
 *   Y  = A_cat · Zₛ         A_cat[p, (k,i)] = α_k A_k[p, i], [m_a, K·n_a], one GEMM per token → [T, m_a, m_b]
 *
 * The second product contracts over (k, i) at once, so it also sums the K components, and its output is
 * already in the row-major order of y: no transposes of activations except the cheap block swap. Gradients
 * come from the engine's autodiff, whose matmul VJP folds the token axis into the contraction for A_cat's
 * gradient (one GEMM, no per-token intermediates).
 *
 * That "per-token" layout runs one small GEMM per token for the second product, which is efficient only when
 * that GEMM has real work (m_a·K·n_a·m_b ≥ 64³ MACs). Small components use a "flat" layout instead, where
 * the second product is one 2-D GEMM with the tokens on its wide side ("flat-b", B first):
 *
 *   Z  = X₂ · B_catᵀ                                                                  → [T, n_a, K, m_b]
 *   Zₜ = Z transposed to [K, n_a, T, m_b], as [K·n_a, T·m_b]
 *   Y' = A_cat · Zₜ                                                                    → [m_a, T·m_b]
 *   y  = Y' viewed [m_a, T, m_b], transposed to [T, m_a, m_b]
 *
 * Both transposes keep the last axis in place, so ORT copies contiguous m_b-runs; transposes that move the
 * last axis are an element-by-element gather in ORT and cost more than the GEMMs at these sizes (measured).
 * When applying A first is cheaper (see chooseLayout), the mirror "flat-a" layout runs: x transposed to
 * [n_a, T·n_b], one GEMM with the stacked A_k, a transpose to [T·m_a, K·n_b], one GEMM with the α-weighted B_cat.
 */
import {
  GraphError,
  add,
  matmul,
  mul,
  reduceSum,
  reshape,
  slice,
  softmax,
  transpose,
  type Tensor,
} from '../engine/index.ts';
import { divDims, mulDims, numel, type Dim } from '../engine/shape.ts';

import type { KroneckerShape } from './kronecker-shapes.ts';

export type { KroneckerShape };

/** Components of one shape, stacked: a [K, m_a, n_a], b [K, m_b, n_b]. */
export interface KroneckerGroup {
  shape: KroneckerShape;
  a: Tensor;
  b: Tensor;
}

export function groupSize(g: KroneckerGroup): number {
  return g.a.shape[0] as number;
}

function checkGroup(g: KroneckerGroup, m: number, n: number, index: number): void {
  const [ma, na, mb, nb] = g.shape;
  const where = `Kronecker group ${index} with shape [${g.shape}]`;
  if (ma * mb !== m || na * nb !== n) {
    throw new GraphError(`${where}: gives a ${ma * mb}x${na * nb} update, the layer is ${m}x${n}`);
  }
  const k = g.a.shape[0];
  const okA = g.a.rank === 3 && g.a.shape[1] === ma && g.a.shape[2] === na;
  const okB = g.b.rank === 3 && g.b.shape[0] === k && g.b.shape[1] === mb && g.b.shape[2] === nb;
  if (!okA || !okB) {
    throw new GraphError(
      `${where}: factors must be [K, ${ma}, ${na}] and [K, ${mb}, ${nb}], got ${g.a} and ${g.b}`,
    );
  }
}

/** Which GEMM layout a shape group uses (see the file comment); 'auto' picks by shape. */
export type KroneckerLayout = 'auto' | 'per-token' | 'flat-b' | 'flat-a';

/** Per-token GEMMs below this many MACs are dominated by per-call overhead: use a flat layout. */
const PER_TOKEN_MIN_MACS = 64 ** 3;

/**
 * The layout for a group of K components of `shape`. The order of the two products decides the work and the
 * size of the intermediate: B first costs n_a·m_b·(n_b + m_a) MACs per token with an n_a·m_b intermediate,
 * A first m_a·n_b·(n_a + m_b) with an m_a·n_b one (e.g. 4x64 ⊗ 64x4: 32k vs 2k MACs). Take the cheaper
 * order; B first runs per token when those GEMMs have real work.
 */
export function chooseLayout(
  shape: KroneckerShape,
  k: number,
  layout: KroneckerLayout,
): Exclude<KroneckerLayout, 'auto'> {
  if (layout !== 'auto') return layout;
  const [ma, na, mb, nb] = shape;
  const bFirst = na * mb * (nb + ma);
  const aFirst = ma * nb * (na + mb);
  if (aFirst < bFirst) return 'flat-a';
  return ma * k * na * mb >= PER_TOKEN_MIN_MACS ? 'per-token' : 'flat-b';
}

/**
 * Σ_i α_i · x·(A_i ⊗ B_i)ᵀ for x [..., n] → [..., m]. `alpha` [r] holds the mixture weights of all r
 * components in group order (softmax of the gate logits for MoKA; ones for a plain sum).
 */
export function kroneckerMixture(
  x: Tensor,
  groups: readonly KroneckerGroup[],
  alpha: Tensor,
  m: number,
  opts: { layout?: KroneckerLayout } = {},
): Tensor {
  if (groups.length === 0) throw new GraphError('kroneckerMixture: no components');
  const n = x.shape[x.rank - 1];
  if (typeof n !== 'number') throw new GraphError(`kroneckerMixture: the feature axis of ${x} must be fixed`);
  const lead = x.shape.slice(0, -1);
  const tokens = divDims(numel(x.shape), n)!;
  let offset = 0;
  let sum: Tensor | null = null;
  groups.forEach((g, index) => {
    checkGroup(g, m, n, index);
    const k = groupSize(g);
    const alphaG = reshape(slice(alpha, 0, offset, offset + k), [k, 1, 1]);
    offset += k;
    const y = reshape(groupUpdate(x, g, alphaG, tokens, chooseLayout(g.shape, k, opts.layout ?? 'auto')), [
      ...lead,
      m,
    ]);
    sum = sum ? add(sum, y) : y;
  });
  if (offset !== alpha.shape[0]) {
    throw new GraphError(`kroneckerMixture: ${alpha.shape[0]} mixture weights for ${offset} components`);
  }
  return sum!;
}

/** One shape group's update as [T·m_a, m_b] (or any view of [T, m]), in the given layout. */
function groupUpdate(x: Tensor, g: KroneckerGroup, alphaG: Tensor, tokens: Dim, layout: string): Tensor {
  const [ma, na, mb, nb] = g.shape;
  const k = groupSize(g);
  if (layout === 'flat-a') {
    // A first: W = A_stack · X' with X' = x as [n_a, T·n_b]; then B contracts (k, j), α folded into B.
    const xt = reshape(transpose(reshape(x, [tokens, na, nb]), [1, 0, 2]), [na, mulDims(tokens, nb)]);
    const w = matmul(reshape(g.a, [k * ma, na]), xt); // [K·m_a, T·n_b]
    const w2 = reshape(transpose(reshape(w, [k, ma, tokens, nb]), [2, 1, 0, 3]), [
      mulDims(tokens, ma),
      k * nb,
    ]);
    const bCat = reshape(transpose(mul(g.b, alphaG), [1, 0, 2]), [mb, k * nb]); // [q, (k,j)] = α_k B_k[q, j]
    return matmul(w2, bCat, { transB: true }); // [T·m_a, m_b]
  }
  // B first: Z = X₂ · B_catᵀ, then A contracts (k, i), α folded into A: A_cat[p, (k,i)] = α_k A_k[p, i].
  const aCat = reshape(transpose(mul(g.a, alphaG), [1, 0, 2]), [ma, k * na]);
  const z = matmul(reshape(x, [mulDims(tokens, na), nb]), reshape(g.b, [k * mb, nb]), { transB: true });
  if (layout === 'per-token') {
    const zs = k === 1 ? z : transpose(reshape(z, [tokens, na, k, mb]), [0, 2, 1, 3]);
    return matmul(aCat, reshape(zs, [tokens, k * na, mb])); // [T, m_a, m_b]
  }
  const zt = reshape(transpose(reshape(z, [tokens, na, k, mb]), [2, 1, 0, 3]), [k * na, mulDims(tokens, mb)]);
  const yt = matmul(aCat, zt); // [m_a, T·m_b]
  return transpose(reshape(yt, [ma, tokens, mb]), [1, 0, 2]); // [T, m_a, m_b]
}

/** MoKA gate: α = softmax(logits) over all components of a layer. */
export function mokaGate(logits: Tensor): Tensor {
  return softmax(logits, 0);
}

/**
 * The same update by materialising ΔW = Σ α_i kron(A_i, B_i) and multiplying: allowed for merge, export,
 * tests and as the benchmark baseline, never for training.
 */
export function materializedKroneckerDelta(groups: readonly KroneckerGroup[], alpha: Tensor): Tensor {
  let offset = 0;
  let sum: Tensor | null = null;
  for (const g of groups) {
    const [ma, na, mb, nb] = g.shape;
    const k = groupSize(g);
    const alphaG = reshape(slice(alpha, 0, offset, offset + k), [k, 1, 1, 1, 1]);
    offset += k;
    // kron(A, B)[p·m_b + q, i·n_b + j] = A[p, i]·B[q, j]: broadcast to [K, m_a, m_b, n_a, n_b] and sum over K.
    const a5 = reshape(g.a, [k, ma, 1, na, 1]);
    const b5 = reshape(g.b, [k, 1, mb, 1, nb]);
    const prod = mul(mul(a5, b5), alphaG);
    const delta = reshape(reduceSum(prod, 0), [ma * mb, na * nb]);
    sum = sum ? add(sum, delta) : delta;
  }
  return sum!;
}
