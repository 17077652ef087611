/**
 * The adapter section of a run config: a zod schema discriminated on `type`, with defaults filled in.
 * Where the MoKA paper is silent (init, scale, gate init, targets, MoKAs details) the defaults here are
 * our choices; docs/adapters.md gives the reasons, and every one is a field so experiments can change it.
 */
import { z } from 'zod';
import { UserError, isUserError } from '../errors.ts';
import { PROJECTION_NAMES, type ProjectionName } from '../model/config.ts';
import { parseParamCount } from './param-units.ts';
import { DEFAULT_TARGET_MODULES, parseTargetModules } from './targets.ts';

export const ADAPTER_TYPES = ['moka', 'mokas', 'krona', 'lora', 'dora'] as const;
export type AdapterType = (typeof ADAPTER_TYPES)[number];

/** How MoKA/MoKAs weigh their components: α = softmax(g) per layer, softmax(W_g x) per token, or 1/r fixed. */
export const GATE_KINDS = ['static', 'token', 'none'] as const;
export type GateKind = (typeof GATE_KINDS)[number];

/** Default component count of a planned MoKA: five balanced components reproduce the paper's counts. */
export const DEFAULT_MOKA_COUNT = 5;
/** Upper bound on components per projection when only a budget is given. */
export const DEFAULT_MAX_COMPONENTS = 8;
/** Default component count of a planned MoKAs (a coarse block and the next finer one). */
export const DEFAULT_MOKAS_COUNT = 2;

const positiveInt = (what: string) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be a whole number` })
    .positive({
      error: `${what} must be at least 1`,
    });

/** A parameter count written as 5000000, "5M" or "500k". */
const paramCountSchema = z
  .union([z.number(), z.string()], { error: 'budget must be a number or a string such as "5M"' })
  .transform((v, ctx) => {
    try {
      return parseParamCount(v, 'budget');
    } catch (err) {
      if (!isUserError(err)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message });
      return z.NEVER;
    }
  });

const targetModulesSchema = z
  .union([z.string(), z.array(z.string())], {
    error: `targetModules must be a list such as ["q_proj", "v_proj"] or "all-linear"`,
  })
  .transform((v, ctx): ProjectionName[] => {
    try {
      return parseTargetModules(v);
    } catch (err) {
      if (!isUserError(err)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message });
      return z.NEVER;
    }
  });

const sharedFields = {
  /** Projections to adapt; default q_proj, k_proj, v_proj, o_proj (see targets.ts). */
  targetModules: targetModulesSchema.default([...DEFAULT_TARGET_MODULES]),
  /** Layer indices to adapt; all layers when absent. Checked against the model in targets.ts. */
  layersToTransform: z
    .array(
      z.number({ error: 'must be a layer index' }).int({ error: 'must be a whole number' }).nonnegative({
        error: 'must be 0 or more',
      }),
      { error: 'must be a list of layer indices such as [0, 1, 2]' },
    )
    .optional(),
  /** Dropout on the adapter branch's input x (LoRA convention); 0 disables it. */
  dropout: z.number().min(0).lt(1, { error: 'dropout must be below 1' }).default(0),
};

/** Builds `{q_proj?: T, …}` from PROJECTION_NAMES, strict, so a typo in a key is reported. */
function perProjection<T extends z.ZodType>(value: T) {
  const shape = Object.fromEntries(PROJECTION_NAMES.map((p) => [p, value.optional()])) as {
    [K in ProjectionName]: z.ZodOptional<T>;
  };
  return z.strictObject(shape);
}

const kroneckerShapeSchema = z.tuple(
  [positiveInt('m_a'), positiveInt('n_a'), positiveInt('m_b'), positiveInt('n_b')],
  {
    error: 'shape must be [m_a, n_a, m_b, n_b]',
  },
);
const componentSchema = z.strictObject({ shape: kroneckerShapeSchema });
const componentListSchema = z.array(componentSchema).min(1, { error: 'give at least one component' });

const gateFields = {
  gate: z.enum(GATE_KINDS).default('static'),
  /** Initial gate logits (or W_g): zeros → uniform softmax at step 0; normal → N(0, 0.02²), breaks symmetry. */
  gateInit: z.enum(['zeros', 'normal']).default('zeros'),
  /** Constant multiplier s on ΔW (the paper has none; 1 keeps its formula). */
  scale: z.number().finite().default(1),
};

const mokaSchema = z.strictObject({
  type: z.literal('moka'),
  ...sharedFields,
  ...gateFields,
  /** Explicit shapes: one list for every target, or a list per projection type (layers differ in shape). */
  components: z
    .union([componentListSchema, perProjection(componentListSchema)], {
      error: 'must be a list of {"shape": [m_a, n_a, m_b, n_b]} or a map from projection name to such a list',
    })
    .optional(),
  /** Planner spec for the projections `components` does not cover; default {count: 5}. */
  plan: z
    .strictObject({
      budget: paramCountSchema.optional(),
      count: positiveInt('plan.count').optional(),
      maxComponents: positiveInt('plan.maxComponents').default(DEFAULT_MAX_COMPONENTS),
    })
    .optional(),
  /** zero-b: A kaiming-uniform(a=√5), B = 0 (ΔW = 0 at step 0); zero-a: the mirror; random: both kaiming. */
  init: z.enum(['zero-b', 'zero-a', 'random']).default('zero-b'),
});

const mokasSchema = z.strictObject({
  type: z.literal('mokas'),
  ...sharedFields,
  ...gateFields,
  /** Block counts a_i (ΔW_i = I_{a_i} ⊗ B_i): one list for every target, or a list per projection type. */
  blocks: z
    .union(
      [
        z.array(positiveInt('block count')).min(1, { error: 'give at least one block count' }),
        perProjection(z.array(positiveInt('block count')).min(1, { error: 'give at least one block count' })),
      ],
      {
        error: 'must be a list of block counts such as [32, 64] or a map from projection name to such a list',
      },
    )
    .optional(),
  plan: z
    .strictObject({
      budget: paramCountSchema.optional(),
      count: positiveInt('plan.count').default(DEFAULT_MOKAS_COUNT),
    })
    .optional(),
  /** zero: every B_i = 0 (ΔW = 0 at step 0); random: kaiming-uniform B_i. */
  init: z.enum(['zero', 'random']).default('zero'),
});

const kronaSchema = z.strictObject({
  type: z.literal('krona'),
  ...sharedFields,
  /** PEFT LoKr `decompose_factor`: −1 splits each side near its square root, f > 0 splits off f. */
  decomposeFactor: z
    .number()
    .int()
    .refine((f) => f === -1 || f > 0, {
      error: 'decomposeFactor must be -1 (near √dim) or a positive integer',
    })
    .default(-1),
  /** PEFT LoKr `r`: when set, the large factor is low-rank if r < max(out_k, in_n)/2, and scale = alpha/r. */
  r: positiveInt('r').optional(),
  /** PEFT LoKr `decompose_both`: also low-rank the small factor (needs r). */
  decomposeBoth: z.boolean().default(false),
  /** Scale numerator: s = alpha/r with r, else s = alpha. Default: s = 1. */
  alpha: z.number().finite().optional(),
  /** zero-a: w1 = 0, w2 kaiming (PEFT LoKr default); zero-b: the LyCORIS mirror; random: both kaiming. */
  init: z.enum(['zero-a', 'zero-b', 'random']).default('zero-a'),
});

const loraFields = {
  ...sharedFields,
  r: positiveInt('r').default(8),
  /** Default 16 with r = 8: s = α/r = 2, the common α = 2r recipe. */
  alpha: z.number().finite().default(16),
  /** rsLoRA: s = α/√r instead of α/r, which keeps update size stable as r grows. */
  rsLora: z.boolean().default(false),
};

const loraSchema = z.strictObject({ type: z.literal('lora'), ...loraFields });
/** DoRA adds one trainable magnitude per output row, initialised to the row norms of W0 (norm detached). */
const doraSchema = z.strictObject({
  type: z.literal('dora'),
  ...loraFields,
  /** Treat ‖W0 + sBA‖ as a constant in the backward, as the DoRA paper (§4.3) and PEFT do; false = exact gradient. */
  detachNorm: z.boolean().default(true),
});

const SCHEMAS = {
  moka: mokaSchema,
  mokas: mokasSchema,
  krona: kronaSchema,
  lora: loraSchema,
  dora: doraSchema,
};

export const adapterConfigSchema = z.discriminatedUnion(
  'type',
  [mokaSchema, mokasSchema, kronaSchema, loraSchema, doraSchema],
  {
    error: `must be one of ${ADAPTER_TYPES.join(', ')}`,
  },
);

export type AdapterConfig = z.output<typeof adapterConfigSchema>;
/** What a user may write: every defaulted field optional. */
export type AdapterConfigInput = z.input<typeof adapterConfigSchema>;
export type MokaConfig = z.output<typeof mokaSchema>;
export type MokasConfig = z.output<typeof mokasSchema>;
export type KronaConfig = z.output<typeof kronaSchema>;
export type LoraConfig = z.output<typeof loraSchema>;
export type DoraConfig = z.output<typeof doraSchema>;
export type MokaPlanSpec = NonNullable<MokaConfig['plan']>;
export type MokasPlanSpec = NonNullable<MokasConfig['plan']>;
export type KroneckerComponentConfig = z.output<typeof componentSchema>;

function issuePath(path: readonly PropertyKey[]): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
    .join('')
    .replace(/^\./, '');
}

/** The allowed keys at `path` of the schema for `type`, for "unknown field" messages. */
function allowedKeys(type: unknown, path: readonly PropertyKey[]): string[] {
  const schema = SCHEMAS[type as AdapterType];
  if (!schema) return [];
  // Optional/default wrappers and union branches are transparent; arrays are entered at numeric keys.
  const expand = (node: z.ZodType): z.ZodType[] => {
    if (node instanceof z.ZodOptional || node instanceof z.ZodDefault)
      return expand(node.unwrap() as z.ZodType);
    if (node instanceof z.ZodUnion) return (node.options as z.ZodType[]).flatMap(expand);
    return [node];
  };
  const child = (node: z.ZodType, key: PropertyKey): z.ZodType[] => {
    if (typeof key === 'number') return node instanceof z.ZodArray ? [node.element as z.ZodType] : [];
    const field =
      node instanceof z.ZodObject ? (node.shape[String(key)] as z.ZodType | undefined) : undefined;
    return field ? [field] : [];
  };
  let nodes: z.ZodType[] = [schema];
  for (const key of path) nodes = nodes.flatMap(expand).flatMap((n) => child(n, key));
  const objects = nodes.flatMap(expand).filter((n): n is z.ZodObject => n instanceof z.ZodObject);
  return [...new Set(objects.flatMap((o) => Object.keys(o.shape)))];
}

/**
 * One zod issue as a sentence: the path, then the message without repeating the field name. A union error
 * is replaced by the issue of the branch that got furthest (the one matching the input's shape), so
 * `components: [{shape: [64, 64, 64]}]` reports the short shape rather than "Invalid input".
 */
function describeIssue(issue: z.core.$ZodIssue, type: unknown, prefix: readonly PropertyKey[] = []): string {
  const path = [...prefix, ...issue.path];
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const deepest = issue.errors
      .map((branch) => branch[0])
      .filter((i): i is z.core.$ZodIssue => i !== undefined && i.path.length > 0)
      .sort((a, b) => b.path.length - a.path.length)[0];
    if (deepest) return describeIssue(deepest, type, path);
  }
  const at = issuePath(path);
  const where = at ? `${at}: ` : '';
  if (issue.code === 'unrecognized_keys') {
    const allowed = allowedKeys(type, path);
    const valid = allowed.length ? `; valid fields: ${allowed.join(', ')}` : '';
    return `${where}unknown field ${issue.keys.map((k) => `"${k}"`).join(', ')}${valid}`;
  }
  const last = path.at(-1);
  const message =
    typeof last === 'string' && issue.message.startsWith(`${last} `)
      ? issue.message.slice(last.length + 1)
      : issue.message;
  return `${where}${message}`;
}

/**
 * Parses and validates an adapter config. `source` names it in messages ("adapter.json", "run config
 * adapter"). Checks that need the model (shapes, layer indices) happen later, in the planner.
 */
export function parseAdapterConfig(json: unknown, source = 'adapter config'): AdapterConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new UserError(`${source}: must be a JSON object such as {"type": "moka"}`);
  }
  const parsed = adapterConfigSchema.safeParse(json);
  if (!parsed.success) {
    const type = (json as { type?: unknown } | null)?.type;
    const issue = parsed.error.issues[0]!;
    throw new UserError(`${source}: ${describeIssue(issue, type)}`);
  }
  const cfg = parsed.data;
  const fail = (msg: string): never => {
    throw new UserError(`${source}: ${msg}`);
  };
  if (cfg.type === 'moka' || cfg.type === 'mokas') {
    const explicit = cfg.type === 'moka' ? cfg.components : cfg.blocks;
    const field = cfg.type === 'moka' ? 'components' : 'blocks';
    if (Array.isArray(explicit) && cfg.plan !== undefined) {
      fail(
        `give either ${field} (one list for every target) or plan, not both; a per-projection ${field} map may be combined with plan`,
      );
    }
    if (explicit && !Array.isArray(explicit)) {
      for (const key of Object.keys(explicit) as ProjectionName[]) {
        if (explicit[key] !== undefined && !cfg.targetModules.includes(key)) {
          fail(
            `${field}.${key} is given but ${key} is not targeted; add it to targetModules (now ${cfg.targetModules.join(', ')}) or remove it`,
          );
        }
      }
    }
  }
  if (cfg.type === 'moka' && cfg.plan && cfg.plan.budget === undefined && cfg.plan.count === undefined) {
    fail(`plan needs a budget (e.g. "5M") or a count (components per projection), or both`);
  }
  if (cfg.type === 'krona' && cfg.decomposeBoth && cfg.r === undefined) {
    fail(`decomposeBoth low-ranks the small factor with rank r; set r as well`);
  }
  return cfg;
}

/** The config of `type` with every default filled in. */
export function defaultAdapterConfig(type: AdapterType): AdapterConfig {
  return parseAdapterConfig({ type });
}

/** The constant s multiplying ΔW. */
export function adapterScale(cfg: AdapterConfig): number {
  switch (cfg.type) {
    case 'moka':
    case 'mokas':
      return cfg.scale;
    case 'krona':
      return cfg.r === undefined ? (cfg.alpha ?? 1) : (cfg.alpha ?? cfg.r) / cfg.r;
    case 'lora':
    case 'dora':
      return cfg.rsLora ? cfg.alpha / Math.sqrt(cfg.r) : cfg.alpha / cfg.r;
  }
}
