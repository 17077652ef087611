/**
 * Shape math of one MoKAs component ΔW = kron(I_a, B): `a` copies of B ∈ R^{(m/a)×(n/a)} on the diagonal
 * of an [m, n] layer (row-major torch.kron; see docs/adapters.md for why the identity is on the left).
 */
import { UserError } from '../errors.ts';
import { divisors, formatLayerRef, type LayerRef } from './kronecker-shapes.ts';

/** Greatest common divisor; a block count must divide both sides of the layer. */
export function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * Every usable block count for an [out, in] layer, ascending (coarse blocks first). a = 1 is left out:
 * kron(I_1, B) = B is a dense m×n update, i.e. full fine-tuning, not a compact adapter.
 */
export function blockCounts(out: number, inn: number): number[] {
  return divisors(gcd(out, inn)).filter((a) => a >= 2);
}

/** [m/a, n/a], the shape of the trainable block B. */
export function blockShape(out: number, inn: number, a: number): [number, number] {
  return [out / a, inn / a];
}

/** Trainable parameters of kron(I_a, B): (m/a)·(n/a) = m·n/a². */
export function blockParamCount(out: number, inn: number, a: number): number {
  return (out / a) * (inn / a);
}

/**
 * Max rank of kron(I_a, B) = a·rank(B) ≤ a·min(m/a, n/a) = min(m, n): every block-diagonal component can
 * reach full rank, so for MoKAs the block size (how many features a block mixes), not rank, is what varies.
 */
export function blockMaxRank(out: number, inn: number): number {
  return Math.min(out, inn);
}

/** "I_32 ⊗ 128x128". */
export function formatBlockComponent(out: number, inn: number, a: number): string {
  const [bm, bn] = blockShape(out, inn, a);
  return `I_${a} ⊗ ${bm}x${bn}`;
}

/**
 * Throws a UserError unless `blocks` is a usable list of block counts for `layer`: each divides both sides,
 * none is 1, none repeats (kron(I_a, B1) + kron(I_a, B2) = kron(I_a, B1 + B2), so a repeat only adds
 * parameters, never expressivity).
 */
export function validateBlockCounts(blocks: readonly number[], layer: LayerRef): void {
  const valid = blockCounts(layer.out, layer.in);
  const seen = new Set<number>();
  blocks.forEach((a, i) => {
    const where = `${formatLayerRef(layer)}: MoKAs component ${i + 1} block count ${a}`;
    if (!Number.isInteger(a) || a < 1) throw new UserError(`${where} must be a positive integer`);
    if (a === 1) {
      throw new UserError(
        `${where} makes ΔW a dense ${layer.out}x${layer.in} matrix (full fine-tuning); use one of ${valid.join(', ')}`,
      );
    }
    if (layer.out % a !== 0 || layer.in % a !== 0) {
      throw new UserError(
        `${where} does not divide both ${layer.out} and ${layer.in}; valid block counts: ${valid.join(', ')}`,
      );
    }
    if (seen.has(a)) {
      throw new UserError(
        `${where} is repeated; two components with the same block count add up to one (I_a⊗B1 + I_a⊗B2 = I_a⊗(B1+B2)), so list each block count once`,
      );
    }
    seen.add(a);
  });
}
