/**
 * Shape math of one Kronecker component ΔW = kron(A, B) on a linear layer W ∈ R^{m×n} ([out, in]).
 * Row-major `torch.kron` convention: A ∈ R^{m_a×n_a}, B ∈ R^{m_b×n_b}, m_a·m_b = m, n_a·n_b = n.
 * Pure integer arithmetic; nothing here builds tensors.
 */
import { UserError } from '../errors.ts';

/** `[m_a, n_a, m_b, n_b]`: A is m_a×n_a, B is m_b×n_b, and kron(A, B) is (m_a·m_b)×(n_a·n_b). */
export type KroneckerShape = readonly [mA: number, nA: number, mB: number, nB: number];

/** A layer a shape is checked against; `name` is what error messages call it (an HF module name). */
export interface LayerRef {
  name: string;
  out: number;
  in: number;
}

/** Every positive divisor of `dim`, ascending. */
export function divisors(dim: number): number[] {
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`divisors: ${dim} is not a positive integer`);
  const small: number[] = [];
  const large: number[] = [];
  for (let d = 1; d * d <= dim; d++) {
    if (dim % d !== 0) continue;
    small.push(d);
    if (d * d !== dim) large.unshift(dim / d);
  }
  return [...small, ...large];
}

/** Every ordered pair (d, dim/d), d ascending: the ways to split one side of a layer between A and B. */
export function divisorPairs(dim: number): Array<[number, number]> {
  return divisors(dim).map((d) => [d, dim / d]);
}

/**
 * Every valid component shape for an [out, in] layer, sorted by (m_a, n_a).
 * `excludeDense` drops shapes whose A or B is 1×1: kron(scalar, B) is a dense m×n update (full
 * fine-tuning plus a redundant scalar), which is never what a Kronecker adapter is for.
 */
export function kroneckerShapes(
  out: number,
  inn: number,
  opts: { excludeDense?: boolean } = {},
): KroneckerShape[] {
  const shapes: KroneckerShape[] = [];
  for (const [mA, mB] of divisorPairs(out)) {
    for (const [nA, nB] of divisorPairs(inn)) {
      if (opts.excludeDense && ((mA === 1 && nA === 1) || (mB === 1 && nB === 1))) continue;
      shapes.push([mA, nA, mB, nB]);
    }
  }
  return shapes;
}

/** Trainable parameters of one component: m_a·n_a + m_b·n_b. */
export function kroneckerParamCount(shape: KroneckerShape): number {
  const [mA, nA, mB, nB] = shape;
  return mA * nA + mB * nB;
}

/**
 * The largest rank kron(A, B) can reach: rank(A⊗B) = rank(A)·rank(B) ≤ min(m_a,n_a)·min(m_b,n_b).
 * That product never exceeds min(m, n) (it is ≤ m_a·m_b and ≤ n_a·n_b); the cap is kept explicit so the
 * function also reads correctly for shapes that do not tile the layer.
 */
export function kroneckerMaxRank(shape: KroneckerShape): number {
  const [mA, nA, mB, nB] = shape;
  return Math.min(Math.min(mA, nA) * Math.min(mB, nB), mA * mB, nA * nB);
}

/** "64x64 ⊗ 64x64", how tables and messages print a shape. */
export function formatKroneckerShape(shape: KroneckerShape): string {
  const [mA, nA, mB, nB] = shape;
  return `${mA}x${nA} ⊗ ${mB}x${nB}`;
}

/** `model.layers.3.self_attn.q_proj [4096x4096]`. */
export function formatLayerRef(layer: LayerRef): string {
  return `${layer.name} [${layer.out}x${layer.in}]`;
}

/**
 * The valid shape closest to a wrong one, for "try …" hints: keep whichever factor of each side divides
 * that side, else fall back to the balanced split of that side (the divisor nearest its square root).
 */
export function suggestKroneckerShape(shape: KroneckerShape, out: number, inn: number): KroneckerShape {
  const fix = (a: number, b: number, dim: number): [number, number] => {
    if (a * b === dim) return [a, b];
    if (Number.isInteger(a) && a > 0 && dim % a === 0) return [a, dim / a];
    if (Number.isInteger(b) && b > 0 && dim % b === 0) return [dim / b, b];
    const ds = divisors(dim);
    const balanced = ds.reduce((best, d) =>
      Math.abs(d - Math.sqrt(dim)) < Math.abs(best - Math.sqrt(dim)) ? d : best,
    );
    return [balanced, dim / balanced];
  };
  const [mA, mB] = fix(shape[0], shape[2], out);
  const [nA, nB] = fix(shape[1], shape[3], inn);
  return [mA, nA, mB, nB];
}

/**
 * Throws a UserError unless `shape` tiles `layer`. `index` is the 1-based component number, so a message
 * reads "component 2 shape [64,64,32,64] gives 2048x4096; m_a·m_b must equal 4096 — try [64,64,64,64]".
 */
export function validateKroneckerShape(shape: KroneckerShape, layer: LayerRef, index: number): void {
  const where = `${formatLayerRef(layer)}: component ${index} shape ${JSON.stringify(shape)}`;
  if (shape.length !== 4 || !shape.every((v) => Number.isInteger(v) && v > 0)) {
    throw new UserError(`${where} must be four positive integers [m_a, n_a, m_b, n_b]`);
  }
  const [mA, nA, mB, nB] = shape;
  const problems: string[] = [];
  if (mA * mB !== layer.out) problems.push(`m_a·m_b must equal ${layer.out} (out_features)`);
  if (nA * nB !== layer.in) problems.push(`n_a·n_b must equal ${layer.in} (in_features)`);
  if (problems.length === 0) return;
  const hint = JSON.stringify(suggestKroneckerShape(shape, layer.out, layer.in));
  throw new UserError(`${where} gives ${mA * mB}x${nA * nB}; ${problems.join(' and ')} — try ${hint}`);
}
