/**
 * Which linear layers an adapter wraps: projection names × layer indices, resolved against one model.
 * Every bad name or index fails here, at the boundary, with the list of valid values.
 */
import { UserError } from '../errors.ts';
import {
  PROJECTION_NAMES,
  projectionShapes,
  projectionWeightName,
  type LlamaConfig,
  type ProjectionName,
} from '../model/config.ts';

/** PEFT's spelling for "every linear layer except the LM head"; accepted wherever target modules are. */
export const ALL_LINEAR = 'all-linear';

/**
 * Default targets for every adapter type: the four attention projections. Five balanced Kronecker components
 * on q/k/v/o reproduce both MoKA parameter counts the paper reports (5.2M on LLaMA2-7B, 3.9M on LLaMA3-8B),
 * which no all-linear setting does; and one default for all types keeps comparisons like for like.
 * docs/adapters.md has the arithmetic.
 */
export const DEFAULT_TARGET_MODULES: readonly ProjectionName[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

const VALID_NAMES = `${PROJECTION_NAMES.join(', ')} (or "${ALL_LINEAR}")`;

export function isProjectionName(name: string): name is ProjectionName {
  return (PROJECTION_NAMES as readonly string[]).includes(name);
}

/**
 * Parses target modules given as a list, a comma-separated string, or "all-linear". Returns them in
 * PROJECTION_NAMES order without duplicates, so plans and files do not depend on how the user ordered them.
 */
export function parseTargetModules(value: string | readonly string[]): ProjectionName[] {
  const names = (typeof value === 'string' ? value.split(',') : [...value])
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new UserError(`target modules are empty; give one or more of ${VALID_NAMES}`);
  if (names.includes(ALL_LINEAR)) {
    if (names.length > 1)
      throw new UserError(`target modules: "${ALL_LINEAR}" cannot be combined with other names`);
    return [...PROJECTION_NAMES];
  }
  for (const name of names) {
    if (!isProjectionName(name)) {
      const hint = PROJECTION_NAMES.find((p) => name.endsWith(`.${p}`) || p.startsWith(name));
      throw new UserError(
        `unknown target module "${name}"${hint ? ` (did you mean "${hint}"?)` : ''}; valid: ${VALID_NAMES}`,
      );
    }
  }
  return PROJECTION_NAMES.filter((p) => names.includes(p));
}

const MAX_LAYER_INDEX = 10_000;

/** Parses a CLI layer list such as "0,1,2" or "0-3,8"; range checks against a model happen in `resolveLayers`. */
export function parseLayerList(value: string): number[] {
  const out: number[] = [];
  for (const part of value.split(',').map((s) => s.trim())) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new UserError(`layers: "${part}" is not a layer index or range; write e.g. 0,1,2 or 0-15`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new UserError(`layers: range "${part}" is backwards; write ${hi}-${lo}`);
    // No LLaMA has anywhere near this many layers; a typo must not expand into billions of indices.
    if (hi >= MAX_LAYER_INDEX)
      throw new UserError(`layers: "${part}" goes past layer ${MAX_LAYER_INDEX - 1}`);
    for (let i = lo; i <= hi; i++) out.push(i);
  }
  return out;
}

/** The targeted layer indices, sorted and deduplicated; all layers when `layers` is undefined. */
export function resolveLayers(cfg: LlamaConfig, layers?: readonly number[]): number[] {
  if (layers === undefined) return Array.from({ length: cfg.numLayers }, (_, i) => i);
  if (layers.length === 0) throw new UserError(`layersToTransform is empty; omit it to adapt every layer`);
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= cfg.numLayers) {
      throw new UserError(
        `layer ${l} does not exist: this model has ${cfg.numLayers} layers, valid indices are 0-${cfg.numLayers - 1}`,
      );
    }
  }
  return [...new Set(layers)].sort((a, b) => a - b);
}

/** HF module name of a projection, e.g. `model.layers.3.self_attn.q_proj` (no `.weight`). */
export function projectionModuleName(layer: number, projection: ProjectionName): string {
  return projectionWeightName(layer, projection).replace(/\.weight$/, '');
}

/** One adapted linear layer. */
export interface TargetedProjection {
  layer: number;
  projection: ProjectionName;
  /** HF module name, used in messages and adapter files. */
  name: string;
  /** out_features (rows of the HF weight). */
  out: number;
  /** in_features. */
  in: number;
}

/** The fields of an adapter config that choose targets (shared by every adapter type). */
export interface TargetSelection {
  targetModules: readonly string[];
  layersToTransform?: readonly number[] | undefined;
}

/** Every targeted (layer, projection) with its [out, in] shape, ordered by layer then PROJECTION_NAMES. */
export function resolveTargets(cfg: LlamaConfig, selection: TargetSelection): TargetedProjection[] {
  const projections = parseTargetModules(selection.targetModules);
  const layers = resolveLayers(cfg, selection.layersToTransform);
  const shapes = projectionShapes(cfg);
  return layers.flatMap((layer) =>
    projections.map((projection) => ({
      layer,
      projection,
      name: projectionModuleName(layer, projection),
      out: shapes[projection].out,
      in: shapes[projection].in,
    })),
  );
}
