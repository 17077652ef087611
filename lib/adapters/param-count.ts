/**
 * Trainable-parameter counts per adapter type for one [out, in] linear layer, and the base model's size for
 * context. Formulas follow docs/adapters.md; the regression tests pin them to published PEFT/QLoRA figures.
 */
import { projectionShapes, PROJECTION_NAMES, type LlamaConfig } from '../model/config.ts';
import type { GateKind } from './adapter-config.ts';
import { blockParamCount } from './block-shapes.ts';
import { kroneckerParamCount, type KroneckerShape } from './kronecker-shapes.ts';
import { lokrFactors, lokrParamCount, type LokrShapeOptions } from './lokr-shapes.ts';

/**
 * Gate parameters of one layer with `components` components: r logits (static), W_g ∈ R^{r×n} (token), or
 * none. A single component has no gate: softmax over one logit is identically 1, so the logit could never
 * learn anything (and one gated component is exactly KronA).
 */
export function gateParamCount(gate: GateKind, components: number, inFeatures: number): number {
  if (components < 2 || gate === 'none') return 0;
  return gate === 'static' ? components : components * inFeatures;
}

/** LoRA: B (m×r) and A (r×n), r(m + n). */
export function loraParamCount(out: number, inn: number, r: number): number {
  return r * (out + inn);
}

/** DoRA: LoRA plus one magnitude per output row, r(m + n) + m. */
export function doraParamCount(out: number, inn: number, r: number): number {
  return loraParamCount(out, inn, r) + out;
}

/** KronA / PEFT LoKr on one layer (dense factors unless r makes them low-rank, as PEFT does). */
export function kronaParamCount(out: number, inn: number, opts: LokrShapeOptions): number {
  return lokrParamCount(lokrFactors(out, inn, opts));
}

/** MoKA: Σ_i (m_a n_a + m_b n_b) plus the gate. */
export function mokaParamCount(
  shapes: readonly KroneckerShape[],
  gate: GateKind,
  inFeatures: number,
): number {
  const factors = shapes.reduce((sum, s) => sum + kroneckerParamCount(s), 0);
  return factors + gateParamCount(gate, shapes.length, inFeatures);
}

/** MoKAs: Σ_i m·n/a_i² plus the gate. */
export function mokasParamCount(out: number, inn: number, blocks: readonly number[], gate: GateKind): number {
  const factors = blocks.reduce((sum, a) => sum + blockParamCount(out, inn, a), 0);
  return factors + gateParamCount(gate, blocks.length, inn);
}

/**
 * Parameters of the base model: embeddings, LM head unless tied, per layer the seven projections and two
 * RMSNorm weights, and the final norm. Used to print the adapter's share of the model.
 */
export function baseModelParamCount(cfg: LlamaConfig): number {
  const shapes = projectionShapes(cfg);
  const perLayer =
    PROJECTION_NAMES.reduce((sum, p) => sum + shapes[p].out * shapes[p].in, 0) + 2 * cfg.hiddenSize;
  const embeddings = cfg.vocabSize * cfg.hiddenSize * (cfg.tieWordEmbeddings ? 1 : 2);
  return embeddings + cfg.numLayers * perLayer + cfg.hiddenSize;
}
