/**
 * The shape planner: turns an adapter config and a model config into concrete per-projection adapter shapes
 * (MoKA component shapes, MoKAs block counts, KronA factors, LoRA ranks) with parameter counts and reachable
 * ranks. Deterministic: the same inputs always give the same plan. The algorithms are described in
 * docs/adapters.md ("The planner").
 */
import { UserError } from '../errors.ts';
import type { LlamaConfig, ProjectionName } from '../model/config.ts';
import {
  ADAPTER_TYPES,
  DEFAULT_MAX_COMPONENTS,
  DEFAULT_MOKA_COUNT,
  DEFAULT_MOKAS_COUNT,
  parseAdapterConfig,
  type AdapterConfig,
  type AdapterType,
  type GateKind,
  type KronaConfig,
  type MokaConfig,
  type MokaPlanSpec,
  type MokasConfig,
} from './adapter-config.ts';
import {
  blockCounts,
  blockMaxRank,
  blockParamCount,
  blockShape,
  formatBlockComponent,
  validateBlockCounts,
} from './block-shapes.ts';
import {
  formatKroneckerShape,
  kroneckerMaxRank,
  kroneckerParamCount,
  kroneckerShapes,
  validateKroneckerShape,
  type KroneckerShape,
  type LayerRef,
} from './kronecker-shapes.ts';
import { lokrFactors, lokrMaxRank, lokrParamCount, type LokrFactors } from './lokr-shapes.ts';
import { gateParamCount } from './param-count.ts';
import { formatInteger, formatParamCount } from './param-units.ts';
import { resolveTargets, type TargetedProjection } from './targets.ts';

/** One row of a projection's plan. `params` and `maxRank` are per layer. */
export type PlannedComponent =
  | { kind: 'kronecker'; shape: KroneckerShape; params: number; maxRank: number }
  | { kind: 'block-diagonal'; blocks: number; blockShape: [number, number]; params: number; maxRank: number }
  | { kind: 'lokr'; factors: LokrFactors; params: number; maxRank: number }
  | { kind: 'low-rank'; r: number; params: number; maxRank: number };

/** The plan of one projection type; every targeted layer of that type gets the same adapter shape. */
export interface ProjectionPlan {
  projection: ProjectionName;
  out: number;
  in: number;
  /** explicit: shapes from the config; planned: chosen by the planner; rule: fixed by the type (KronA, LoRA). */
  source: 'explicit' | 'planned' | 'rule';
  components: PlannedComponent[];
  gateParams: number;
  /** DoRA's per-row magnitude vector; 0 for other types. */
  magnitudeParams: number;
  paramsPerLayer: number;
  /** Upper bound on rank(ΔW) for one layer: min(m, n, Σ component ranks). */
  maxRank: number;
  /** Number of targeted layers. */
  layers: number;
  totalParams: number;
}

export interface AdapterPlan {
  type: AdapterType;
  config: AdapterConfig;
  numLayers: number;
  /** Targeted layer indices. */
  layers: number[];
  /** One entry per targeted projection type, in PROJECTION_NAMES order. */
  projections: ProjectionPlan[];
  /** Every adapted (layer, projection) with its trainable parameters. */
  targets: Array<TargetedProjection & { params: number }>;
  paramsPerLayer: number;
  totalParams: number;
  /** The parameter budget the plan had to fit, when one was given. */
  budget?: number;
}

/** A valid MoKA component shape with its cost and reach. */
export interface ShapeOption {
  shape: KroneckerShape;
  params: number;
  maxRank: number;
}

/** A targeted projection type: its shape and the name messages use (its first targeted layer). */
interface ProjectionType extends LayerRef {
  projection: ProjectionName;
}

/**
 * Every valid MoKA component shape for an [out, in] layer, cheapest first, then highest reachable rank, then
 * by shape. Shapes with a 1×1 factor are left out (they are dense updates).
 */
export function kroneckerCandidates(out: number, inn: number): ShapeOption[] {
  return kroneckerShapes(out, inn, { excludeDense: true })
    .map((shape) => ({ shape, params: kroneckerParamCount(shape), maxRank: kroneckerMaxRank(shape) }))
    .sort((a, b) => a.params - b.params || b.maxRank - a.maxRank || compareShapes(a.shape, b.shape));
}

function compareShapes(a: KroneckerShape, b: KroneckerShape): number {
  for (let i = 0; i < 4; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** "786,432 parameters (24,576 per layer × 32 layers)", how budget errors state a cost. */
function budgetWords(total: number, perLayer: number, layers: number): string {
  return `${formatInteger(total)} parameters (${formatInteger(perLayer)} per layer × ${layers} layers)`;
}

/* ------------------------------------------------------------------ MoKA ------------------------------------------------------------------ */

interface MokaState {
  type: ProjectionType;
  candidates: ShapeOption[];
  chosen: number[];
  rankSum: number;
  limit: number;
}

/** Gate parameters added by growing from k to k + 1 components. */
function gateIncrement(gate: GateKind, k: number, inn: number): number {
  return gateParamCount(gate, k + 1, inn) - gateParamCount(gate, k, inn);
}

/**
 * The planner's next MoKA component for one projection within `room` parameters, or -1. Preference order:
 * (1) largest gain in reachable rank min(m, n, Σ rank_i); (2) fewest parameters, so more distinct shapes fit;
 * (3) highest rank of its own; (4) canonical order. Shapes already chosen are skipped, which makes the mixture
 * diverse: different shapes give the "rank flexibility" MoKA is about.
 */
function nextMokaComponent(s: MokaState, gate: GateKind, room: number): number {
  const cap = Math.min(s.type.out, s.type.in);
  const have = Math.min(cap, s.rankSum);
  const extra = gateIncrement(gate, s.chosen.length, s.type.in);
  let best = -1;
  let bestGain = -1;
  for (let i = 0; i < s.candidates.length; i++) {
    if (s.chosen.includes(i)) continue;
    const c = s.candidates[i]!;
    if (c.params + extra > room) continue;
    const gain = Math.min(cap, s.rankSum + c.maxRank) - have;
    // Candidates are sorted by (params, -rank, shape), so the first one with the top gain wins ties correctly.
    if (gain > bestGain) {
      best = i;
      bestGain = gain;
    }
  }
  return best;
}

function addMokaComponent(s: MokaState, gate: GateKind, i: number): number {
  const cost = s.candidates[i]!.params + gateIncrement(gate, s.chosen.length, s.type.in);
  s.chosen.push(i);
  s.rankSum += s.candidates[i]!.maxRank;
  return cost;
}

/**
 * Round-robin greedy over projection types sharing one per-layer pool: each round every type adds its next
 * component (nextMokaComponent) if it fits, so types grow in step and none starves the others. In the first
 * round each type leaves room for the cheapest component of the types after it, so a feasible budget always
 * gives every type at least one component. Stops when a round adds nothing or every type reached its limit.
 */
function planMokaComponents(
  types: ProjectionType[],
  spec: MokaPlanSpec,
  gate: GateKind,
  pool: number,
  layers: number,
  explicitPerLayer: number,
): Map<ProjectionName, KroneckerShape[]> {
  const states: MokaState[] = types.map((type) => {
    const candidates = kroneckerCandidates(type.out, type.in);
    if (candidates.length === 0) {
      throw new UserError(
        `${type.name} [${type.out}x${type.in}] has no Kronecker factorization without a 1x1 factor`,
      );
    }
    if (spec.count !== undefined && candidates.length < spec.count) {
      throw new UserError(
        `${type.name} [${type.out}x${type.in}] has only ${candidates.length} distinct component shapes; lower plan.count (now ${spec.count}) to at most ${candidates.length}`,
      );
    }
    return { type, candidates, chosen: [], rankSum: 0, limit: spec.count ?? spec.maxComponents };
  });
  const cheapest = (s: MokaState) => s.candidates[0]!.params;
  const needed = states.reduce((sum, s) => sum + cheapest(s), 0);
  if (needed > pool) {
    const perLayer = needed + explicitPerLayer;
    throw new UserError(
      `budget ${formatParamCount(spec.budget!)} is too small for MoKA on ${types.map((t) => t.projection).join(', ')}: ` +
        `one cheapest component per projection needs ${budgetWords(perLayer * layers, perLayer, layers)}; ` +
        `raise the budget to at least ${formatParamCount(perLayer * layers)} or target fewer projections or layers`,
    );
  }
  let left = pool;
  states.forEach((s, i) => {
    const reserve = states.slice(i + 1).reduce((sum, t) => sum + cheapest(t), 0);
    left -= addMokaComponent(s, gate, nextMokaComponent(s, gate, left - reserve));
  });
  for (let grew = true; grew; ) {
    grew = false;
    for (const s of states) {
      if (s.chosen.length >= s.limit) continue;
      const i = nextMokaComponent(s, gate, left);
      if (i < 0) continue;
      left -= addMokaComponent(s, gate, i);
      grew = true;
    }
  }
  if (spec.count !== undefined) {
    const short = states.filter((s) => s.chosen.length < spec.count!);
    if (short.length > 0) {
      const perLayer =
        explicitPerLayer +
        states.reduce(
          (sum, s) =>
            sum +
            s.candidates.slice(0, spec.count).reduce((a, c) => a + c.params, 0) +
            gateParamCount(gate, spec.count!, s.type.in),
          0,
        );
      throw new UserError(
        `budget ${formatParamCount(spec.budget!)} does not fit ${spec.count} components on ${short.map((s) => s.type.projection).join(', ')}; ` +
          `${spec.count} components per projection need about ${budgetWords(perLayer * layers, perLayer, layers)}; ` +
          `raise the budget or lower plan.count`,
      );
    }
  }
  return new Map(states.map((s) => [s.type.projection, s.chosen.map((i) => s.candidates[i]!.shape)]));
}

function planMoka(
  cfg: MokaConfig,
  types: ProjectionType[],
  layers: number,
): Map<ProjectionName, PlannedShapes> {
  const explicit = new Map<ProjectionName, KroneckerShape[]>();
  for (const t of types) {
    const list = Array.isArray(cfg.components) ? cfg.components : cfg.components?.[t.projection];
    if (!list) continue;
    list.forEach((c, i) => validateKroneckerShape(c.shape, t, i + 1));
    explicit.set(
      t.projection,
      list.map((c) => c.shape),
    );
  }
  const result = new Map<ProjectionName, PlannedShapes>();
  let explicitPerLayer = 0;
  for (const [p, shapes] of explicit) {
    result.set(p, { source: 'explicit', shapes });
    const t = types.find((x) => x.projection === p)!;
    explicitPerLayer +=
      shapes.reduce((s, x) => s + kroneckerParamCount(x), 0) + gateParamCount(cfg.gate, shapes.length, t.in);
  }
  const rest = types.filter((t) => !explicit.has(t.projection));
  if (rest.length === 0) return result;
  const spec: MokaPlanSpec = cfg.plan ?? { count: DEFAULT_MOKA_COUNT, maxComponents: DEFAULT_MAX_COMPONENTS };
  let pool = Infinity;
  if (spec.budget !== undefined) {
    pool = Math.floor(spec.budget / layers) - explicitPerLayer;
    if (pool < 0) {
      throw new UserError(
        `budget ${formatParamCount(spec.budget)} is spent by the explicit components alone ` +
          `(${budgetWords(explicitPerLayer * layers, explicitPerLayer, layers)}); raise the budget`,
      );
    }
  }
  for (const [p, shapes] of planMokaComponents(rest, spec, cfg.gate, pool, layers, explicitPerLayer)) {
    result.set(p, { source: 'planned', shapes });
  }
  return result;
}

/* ------------------------------------------------------------------ MoKAs ----------------------------------------------------------------- */

/** Cost of `count` consecutive block counts starting at `start` (coarse → fine), plus the gate. */
function blockWindowCost(
  t: ProjectionType,
  counts: number[],
  start: number,
  count: number,
  gate: GateKind,
): number {
  return (
    counts.slice(start, start + count).reduce((sum, a) => sum + blockParamCount(t.out, t.in, a), 0) +
    gateParamCount(gate, count, t.in)
  );
}

/**
 * MoKAs plan: each projection gets `count` consecutive valid block counts (a coarse block and the next finer
 * ones). Nested block counts add no new directions (I_{2a}⊗B2 = I_a⊗(I_2⊗B2)), so a budget buys coarser
 * blocks, not more components. Without a budget the coarsest block costs at most the cheapest MoKA component
 * of that layer (2·√(m·n) for square-friendly sizes). With a budget, shares are split ∝ m·n — so every
 * projection can afford the same block count — by water-filling: a type whose finest window exceeds its
 * share is given that window and the rest is re-split; then each type takes the coarsest window that fits.
 */
function planMokasBlocks(
  types: ProjectionType[],
  count: number,
  budget: number | undefined,
  gate: GateKind,
  pool: number,
  layers: number,
  explicitPerLayer: number,
): Map<ProjectionName, number[]> {
  const counts = new Map(types.map((t) => [t.projection, blockCounts(t.out, t.in)]));
  for (const t of types) {
    const valid = counts.get(t.projection)!;
    if (valid.length < count) {
      throw new UserError(
        `${t.name} [${t.out}x${t.in}] has only ${valid.length} usable block counts (${valid.join(', ') || 'none'}); lower plan.count (now ${count})`,
      );
    }
  }
  const start = new Map<ProjectionName, number>();
  if (budget === undefined) {
    for (const t of types) {
      const valid = counts.get(t.projection)!;
      const anchorCost = kroneckerCandidates(t.out, t.in)[0]?.params ?? Infinity;
      const first = valid.findIndex((a) => blockParamCount(t.out, t.in, a) <= anchorCost);
      start.set(t.projection, Math.min(first < 0 ? valid.length : first, valid.length - count));
    }
  } else {
    const finest = (t: ProjectionType) => counts.get(t.projection)!.length - count;
    const minCost = (t: ProjectionType) =>
      blockWindowCost(t, counts.get(t.projection)!, finest(t), count, gate);
    const needed = types.reduce((s, t) => s + minCost(t), 0);
    if (needed > pool) {
      const perLayer = needed + explicitPerLayer;
      throw new UserError(
        `budget ${formatParamCount(budget)} is too small for MoKAs with ${count} components on ${types.map((t) => t.projection).join(', ')}: ` +
          `the finest blocks need ${budgetWords(perLayer * layers, perLayer, layers)}; ` +
          `raise the budget to at least ${formatParamCount(perLayer * layers)}, lower plan.count, or target fewer projections or layers`,
      );
    }
    let open = [...types];
    let left = pool;
    const share = new Map<ProjectionName, number>();
    for (;;) {
      const weight = open.reduce((s, t) => s + t.out * t.in, 0);
      for (const t of open) share.set(t.projection, Math.floor((left * t.out * t.in) / weight));
      const starved = open.filter((t) => minCost(t) > share.get(t.projection)!);
      if (starved.length === 0) break;
      for (const t of starved) {
        share.set(t.projection, minCost(t));
        left -= minCost(t);
      }
      open = open.filter((t) => !starved.includes(t));
    }
    for (const t of types) {
      const valid = counts.get(t.projection)!;
      let i = 0;
      while (blockWindowCost(t, valid, i, count, gate) > share.get(t.projection)!) i++;
      start.set(t.projection, i);
    }
  }
  return new Map(
    types.map((t) => {
      const i = start.get(t.projection)!;
      return [t.projection, counts.get(t.projection)!.slice(i, i + count)];
    }),
  );
}

function planMokas(
  cfg: MokasConfig,
  types: ProjectionType[],
  layers: number,
): Map<ProjectionName, PlannedBlocks> {
  const result = new Map<ProjectionName, PlannedBlocks>();
  let explicitPerLayer = 0;
  for (const t of types) {
    const blocks = Array.isArray(cfg.blocks) ? cfg.blocks : cfg.blocks?.[t.projection];
    if (!blocks) continue;
    validateBlockCounts(blocks, t);
    result.set(t.projection, { source: 'explicit', blocks });
    explicitPerLayer +=
      blocks.reduce((s, a) => s + blockParamCount(t.out, t.in, a), 0) +
      gateParamCount(cfg.gate, blocks.length, t.in);
  }
  const rest = types.filter((t) => !result.has(t.projection));
  if (rest.length === 0) return result;
  const spec = cfg.plan ?? { count: DEFAULT_MOKAS_COUNT, budget: undefined };
  let pool = Infinity;
  if (spec.budget !== undefined) {
    pool = Math.floor(spec.budget / layers) - explicitPerLayer;
    if (pool < 0) {
      throw new UserError(
        `budget ${formatParamCount(spec.budget)} is spent by the explicit blocks alone ` +
          `(${budgetWords(explicitPerLayer * layers, explicitPerLayer, layers)}); raise the budget`,
      );
    }
  }
  const planned = planMokasBlocks(rest, spec.count, spec.budget, cfg.gate, pool, layers, explicitPerLayer);
  for (const [p, blocks] of planned) result.set(p, { source: 'planned', blocks });
  return result;
}

/* ---------------------------------------------------------------- assembly ---------------------------------------------------------------- */

interface PlannedShapes {
  source: 'explicit' | 'planned';
  shapes: KroneckerShape[];
}
interface PlannedBlocks {
  source: 'explicit' | 'planned';
  blocks: number[];
}

function kronaComponent(cfg: KronaConfig, t: ProjectionType): PlannedComponent {
  const factors = lokrFactors(t.out, t.in, cfg);
  return {
    kind: 'lokr',
    factors,
    params: lokrParamCount(factors),
    maxRank: Math.min(lokrMaxRank(factors), t.out, t.in),
  };
}

function projectionPlan(
  t: ProjectionType,
  source: ProjectionPlan['source'],
  components: PlannedComponent[],
  gateParams: number,
  magnitudeParams: number,
  layers: number,
): ProjectionPlan {
  const paramsPerLayer = components.reduce((s, c) => s + c.params, 0) + gateParams + magnitudeParams;
  const rankSum = components.reduce((s, c) => s + c.maxRank, 0);
  return {
    projection: t.projection,
    out: t.out,
    in: t.in,
    source,
    components,
    gateParams,
    magnitudeParams,
    paramsPerLayer,
    maxRank: Math.min(t.out, t.in, rankSum),
    layers,
    totalParams: paramsPerLayer * layers,
  };
}

/**
 * Plans `config` on the model `llama`: resolves targets (UserError on unknown names or layers), validates
 * explicit shapes against every targeted layer, and fills the rest with the planner.
 */
export function planAdapter(llama: LlamaConfig, config: AdapterConfig): AdapterPlan {
  const targets = resolveTargets(llama, config);
  const layers = [...new Set(targets.map((t) => t.layer))];
  const types: ProjectionType[] = [];
  for (const t of targets) {
    if (!types.some((x) => x.projection === t.projection)) {
      types.push({ projection: t.projection, name: t.name, out: t.out, in: t.in });
    }
  }
  const L = layers.length;
  let projections: ProjectionPlan[];
  switch (config.type) {
    case 'moka': {
      const planned = planMoka(config, types, L);
      projections = types.map((t) => {
        const { source, shapes } = planned.get(t.projection)!;
        const components: PlannedComponent[] = shapes.map((shape) => ({
          kind: 'kronecker',
          shape,
          params: kroneckerParamCount(shape),
          maxRank: kroneckerMaxRank(shape),
        }));
        return projectionPlan(t, source, components, gateParamCount(config.gate, shapes.length, t.in), 0, L);
      });
      break;
    }
    case 'mokas': {
      const planned = planMokas(config, types, L);
      projections = types.map((t) => {
        const { source, blocks } = planned.get(t.projection)!;
        const components: PlannedComponent[] = blocks.map((a) => ({
          kind: 'block-diagonal',
          blocks: a,
          blockShape: blockShape(t.out, t.in, a),
          params: blockParamCount(t.out, t.in, a),
          maxRank: blockMaxRank(t.out, t.in),
        }));
        return projectionPlan(t, source, components, gateParamCount(config.gate, blocks.length, t.in), 0, L);
      });
      break;
    }
    case 'krona':
      projections = types.map((t) => projectionPlan(t, 'rule', [kronaComponent(config, t)], 0, 0, L));
      break;
    case 'lora':
    case 'dora': {
      const r = config.r;
      projections = types.map((t) =>
        projectionPlan(
          t,
          'rule',
          [{ kind: 'low-rank', r, params: r * (t.out + t.in), maxRank: Math.min(r, t.out, t.in) }],
          0,
          config.type === 'dora' ? t.out : 0,
          L,
        ),
      );
      break;
    }
  }
  const perType = new Map(projections.map((p) => [p.projection, p.paramsPerLayer]));
  const paramsPerLayer = projections.reduce((s, p) => s + p.paramsPerLayer, 0);
  const budget =
    (config.type === 'moka' || config.type === 'mokas') && config.plan?.budget !== undefined
      ? config.plan.budget
      : undefined;
  return {
    type: config.type,
    config,
    numLayers: llama.numLayers,
    layers,
    projections,
    targets: targets.map((t) => ({ ...t, params: perType.get(t.projection)! })),
    paramsPerLayer,
    totalParams: paramsPerLayer * L,
    ...(budget !== undefined ? { budget } : {}),
  };
}

/** "64x64 ⊗ 64x64", "I_32 ⊗ 128x128", "LoKr 64x64 ⊗ 64x64 (w2 rank 8)", "LoRA r=8". */
export function describeComponent(c: PlannedComponent, out: number, inn: number): string {
  switch (c.kind) {
    case 'kronecker':
      return formatKroneckerShape(c.shape);
    case 'block-diagonal':
      return formatBlockComponent(out, inn, c.blocks);
    case 'lokr': {
      const f = c.factors;
      const lr = [
        f.w1Rank !== null ? `w1 rank ${f.w1Rank}` : '',
        f.w2Rank !== null ? `w2 rank ${f.w2Rank}` : '',
      ]
        .filter(Boolean)
        .join(', ');
      return `${f.w1[0]}x${f.w1[1]} ⊗ ${f.w2[0]}x${f.w2[1]}${lr ? ` (${lr})` : ''}`;
    }
    case 'low-rank':
      return `${out}x${c.r} · ${c.r}x${inn} (r=${c.r})`;
  }
}

/**
 * The LoRA (or DoRA) rank that spends at most `budget` on `targets`: r = ⌊(budget − magnitudes)/Σ(m + n)⌋.
 * UserError when even r = 1 does not fit.
 */
export function loraRankForBudget(
  targets: readonly TargetedProjection[],
  budget: number,
  dora: boolean,
): number {
  const perRank = targets.reduce((s, t) => s + t.out + t.in, 0);
  const fixed = dora ? targets.reduce((s, t) => s + t.out, 0) : 0;
  const r = Math.floor((budget - fixed) / perRank);
  if (r < 1) {
    throw new UserError(
      `budget ${formatParamCount(budget)} is too small for ${dora ? 'DoRA' : 'LoRA'} on these targets: r = 1 needs ${formatInteger(perRank + fixed)} parameters`,
    );
  }
  return r;
}

/** One entry of the "compare" line: an adapter type's total on the same targets, or why it has none. */
export interface AdapterComparison {
  type: AdapterType;
  totalParams: number | null;
  /** Settings that differ from the type's defaults (e.g. "r=37 from budget"), or the error. */
  note: string;
}

/**
 * Trainable parameters of every adapter type at its default settings on the same targets and layers; with a
 * budget, MoKA and MoKAs plan to it and LoRA/DoRA take the largest r that fits (KronA has no free size).
 */
export function compareAdapterTypes(
  llama: LlamaConfig,
  selection: {
    targetModules: readonly string[];
    layersToTransform?: readonly number[] | undefined;
    budget?: number | undefined;
  },
): AdapterComparison[] {
  const base = {
    targetModules: [...selection.targetModules],
    ...(selection.layersToTransform ? { layersToTransform: [...selection.layersToTransform] } : {}),
  };
  return ADAPTER_TYPES.map((type) => {
    try {
      const raw: Record<string, unknown> = { type, ...base };
      let note = 'defaults';
      if (selection.budget !== undefined) {
        if (type === 'moka' || type === 'mokas') {
          raw.plan = { budget: selection.budget };
          note = `budget ${formatParamCount(selection.budget)}`;
        } else if (type === 'lora' || type === 'dora') {
          raw.r = loraRankForBudget(resolveTargets(llama, base), selection.budget, type === 'dora');
          note = `r=${String(raw.r)} fits the budget`;
        }
      }
      return { type, totalParams: planAdapter(llama, parseAdapterConfig(raw)).totalParams, note };
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      return { type, totalParams: null, note: err.message };
    }
  });
}
