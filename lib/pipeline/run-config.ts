/**
 * The run config: one zod schema describing a whole pipeline run (model → quantize → train each adapter variant →
 * evaluate → report). The console input, `moka run`, the S3 trigger, the validate Lambda and every stage parse
 * with it; `moka schema` prints its JSON Schema (zod's own export, input side: defaults shown).
 *
 * Output shape (what code reads): `adapters` is always a list of named variants `{name, adapter, initFrom?}`
 * (a single adapter config becomes one variant named after its type); everything else keeps its input shape with
 * defaults filled in. Unknown keys are errors at every level.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { UserError } from '../errors.ts';
import {
  ADAPTER_TYPES,
  adapterConfigSchema,
  parseAdapterConfig,
  type AdapterConfig,
} from '../adapters/adapter-config.ts';
import { DATASET_FORMATS, TrainConfigSchema } from '../train/train-config.ts';

/** Characters Step Functions execution names and S3 keys both accept, with CloudWatch logging on. */
export const RUN_ID_PATTERN = /^[A-Za-z0-9_-]{1,80}$/;
/** Variant names become S3 key segments and Batch parameters: same alphabet, shorter, letter or digit first. */
export const VARIANT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$/;
/** The evaluation of the un-adapted base model is stored and scheduled under this name. */
export const BASE_VARIANT = 'base';

const URI_SCHEMES = ['s3://', 'file://'];

/**
 * A location: `s3://bucket/key`, `file:///abs/path`, or a plain path (relative to where the config is read).
 * Other schemes (http://, gs://) are refused here rather than failing halfway through a run.
 */
export const UriSchema = z
  .string({ error: 'must be a string: a path, file:// or s3:// URI' })
  .min(1, { error: 'must not be empty' })
  .superRefine((uri, ctx) => {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(uri)?.[0];
    if (scheme && !URI_SCHEMES.includes(scheme.toLowerCase())) {
      ctx.addIssue({
        code: 'custom',
        message: `unsupported URI scheme "${scheme}"; use a path, file:// or s3://bucket/key`,
      });
    } else if (
      scheme?.toLowerCase() === 's3://' &&
      !/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/|$)/.test(uri)
    ) {
      ctx.addIssue({ code: 'custom', message: `"${uri}" is not an S3 URI of the form s3://bucket/key` });
    }
  });

const uriList = z.union([UriSchema, z.array(UriSchema).min(1, { error: 'give at least one URI' })], {
  error: 'must be a URI or a list of URIs',
});

const positiveInt = (what: string) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be a whole number` })
    .min(1, { error: `${what} must be at least 1` });

export const QuantizeSectionSchema = z.strictObject({
  format: z
    .enum(['nf4', 'int4'], { error: 'format must be "nf4" or "int4"' })
    .default('nf4')
    .describe('nf4: bitsandbytes layout (QLoRA); int4: ONNX Runtime MatMulNBits layout.'),
  blockSize: positiveInt('blockSize')
    .default(64)
    .describe('Values per scale: nf4 32..4096, int4 16..256, powers of two.'),
  doubleQuant: z
    .boolean()
    .default(false)
    .describe('nf4 only: 8-bit block scales (QLoRA double quantization).'),
  symmetric: z.boolean().default(false).describe('int4 only: symmetric blocks without zero points.'),
  quantizeLmHead: z
    .boolean()
    .default(false)
    .describe('Quantize lm_head too (transformers keeps it in 16 bits).'),
});

/** Variant fields besides the adapter config itself. */
const variantFields = {
  name: z
    .string({ error: 'name must be a string' })
    .regex(VARIANT_NAME_PATTERN, {
      error: 'name must be 1-40 letters, digits, "_" or "-", starting with a letter or digit',
    })
    .refine((n) => n !== BASE_VARIANT, {
      error: `"${BASE_VARIANT}" is reserved for the un-adapted model's evaluation; choose another name`,
    })
    .describe('Variant name: the folder variants/<name>/ and the row of the report.'),
  initFrom: UriSchema.optional().describe(
    'An adapter directory (adapter_config.json + adapter_model.safetensors) whose weights initialize this variant; it must have the same adapter type, targets and shapes. Used to retrain from the previous adapter.',
  ),
};

/** The adapter schemas of adapter-config.ts, each with `name` and `initFrom` added (still strict). */
const variantSchema = z.discriminatedUnion(
  'type',
  adapterConfigSchema.options.map((o) => o.extend(variantFields)) as unknown as [
    z.ZodObject,
    ...z.ZodObject[],
  ],
  { error: `type must be one of ${ADAPTER_TYPES.join(', ')}` },
);

export interface RunVariant {
  name: string;
  adapter: AdapterConfig;
  /** Adapter directory whose weights initialize training (see variantFields.initFrom). */
  initFrom?: string;
}

/** Runs parseAdapterConfig's cross-field checks, which the plain schema does not carry, as zod issues. */
function adapterOf(
  raw: Record<string, unknown>,
  ctx: z.RefinementCtx,
  path: (string | number)[],
): AdapterConfig {
  try {
    return parseAdapterConfig(raw, 'adapter');
  } catch (err) {
    ctx.addIssue({ code: 'custom', path, message: (err as Error).message.replace(/^adapter: /, '') });
    return z.NEVER;
  }
}

const adaptersSchema = z
  .union([adapterConfigSchema, z.array(variantSchema).min(1, { error: 'give at least one variant' })], {
    error: 'adapters must be one adapter config ({"type": "moka", ...}) or a list of named variants',
  })
  .describe(
    'One adapter config, or a list of named variants ({"name": "lora", "type": "lora", "r": 8, ...}) trained and evaluated side by side.',
  )
  .transform((value, ctx): RunVariant[] => {
    if (!Array.isArray(value)) {
      const raw = value as Record<string, unknown>;
      return [{ name: String(raw.type), adapter: adapterOf(raw, ctx, []) }];
    }
    const seen = new Set<string>();
    return value.map((v, i) => {
      const { name, initFrom, ...rest } = v as Record<string, unknown> & { name: string; initFrom?: string };
      if (seen.has(name))
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate variant name "${name}"` });
      seen.add(name);
      return { name, adapter: adapterOf(rest, ctx, [i]), ...(initFrom !== undefined ? { initFrom } : {}) };
    });
  });

export const DataSectionSchema = z.strictObject({
  train: uriList.describe(
    'Training data: .json/.jsonl files or folders (Alpaca, commonsense, chat or text records).',
  ),
  validation: uriList
    .optional()
    .describe(
      "Held-out data for the training loss; default: a seeded split of train (the training section's evalFraction).",
    ),
  format: z
    .enum(['auto', ...DATASET_FORMATS] as const, {
      error: `format must be one of auto, ${DATASET_FORMATS.join(', ')}`,
    })
    .default('auto')
    .describe("Record format; auto detects it per record. Sets the training section's datasetFormat."),
});

export const EvalsSectionSchema = z.strictObject({
  tasks: z
    .array(z.string().min(1), { error: 'tasks must be a list of task names or task files' })
    .min(1, { error: 'give at least one task' })
    .describe('lm-evaluation-harness task names (e.g. arc_easy, boolq) or task files in data.'),
  data: UriSchema.optional().describe('Folder holding the task data files (offline evaluation).'),
  limit: positiveInt('limit').optional().describe('Evaluate at most this many items per task.'),
  shots: z
    .number({ error: 'shots must be a number' })
    .int({ error: 'shots must be a whole number' })
    .min(0, { error: 'shots must be 0 or more' })
    .optional()
    .describe(
      "Few-shot examples per item; default: each task's own (e.g. 0 for the commonsense tasks, 5 for MMLU).",
    ),
  batchSize: positiveInt('batchSize').optional().describe('Sequences per scoring run.'),
});

export const ComputeSectionSchema = z.strictObject({
  provider: z
    .enum(['cpu', 'cuda', 'webgpu', 'auto'], { error: 'provider must be one of cpu, cuda, webgpu, auto' })
    .default('cpu')
    .describe('ONNX Runtime execution provider of every stage.'),
  threads: positiveInt('threads')
    .optional()
    .describe('ONNX Runtime intra-op threads (1 = bit-reproducible on CPU).'),
  instanceType: z
    .string()
    .optional()
    .describe('Hint for the AWS deployment: EC2 instance type of the GPU jobs.'),
  gpus: z.number().int().min(0).optional().describe('Hint for the AWS deployment: GPUs per job.'),
});

export const RunConfigSchema = z
  .strictObject({
    runId: z
      .string({ error: 'runId must be a string' })
      .regex(RUN_ID_PATTERN, {
        error:
          'runId must be 1-80 letters, digits, "_" or "-" (it names S3 folders and the Step Functions execution); no "/", "." or spaces',
      })
      .optional()
      .describe('Stable run identifier; generated when absent. Re-running the same runId resumes the run.'),
    model: UriSchema.describe(
      'The base model: a Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json).',
    ),
    quantize: z
      .union([z.literal(false), QuantizeSectionSchema], {
        error: 'quantize must be false or {"format": "nf4"|"int4", ...}',
      })
      .default({ format: 'nf4', blockSize: 64, doubleQuant: false, symmetric: false, quantizeLmHead: false })
      .describe('4-bit quantization of the base (cached by content), or false to train on the float model.'),
    adapters: adaptersSchema,
    data: DataSectionSchema,
    training: TrainConfigSchema.default(TrainConfigSchema.parse({})).describe(
      'The training section (see docs/training.md).',
    ),
    evals: EvalsSectionSchema.optional().describe(
      'Evaluation of the base and every variant; absent: no evaluation.',
    ),
    compute: ComputeSectionSchema.default({ provider: 'cpu' }).describe('Where and how the stages compute.'),
  })
  .superRefine((c, ctx) => {
    if (
      c.data.format !== 'auto' &&
      c.training.datasetFormat !== 'auto' &&
      c.data.format !== c.training.datasetFormat
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['data', 'format'],
        message: `data.format "${c.data.format}" contradicts training.datasetFormat "${c.training.datasetFormat}"; give one of them`,
      });
    }
  });

export type RunConfig = z.output<typeof RunConfigSchema>;
export type RunConfigInput = z.input<typeof RunConfigSchema>;

function issuePath(path: readonly PropertyKey[]): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
    .join('')
    .replace(/^\./, '');
}

/** Every issue, unions resolved to the branch that got furthest (the one the input was meant to be). */
function flattenIssues(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const branches = issue.errors.filter((b) => b.length > 0);
      const depth = (b: readonly z.core.$ZodIssue[]) => Math.max(...b.map((i) => i.path.length));
      const best = [...branches].sort((a, b) => depth(b) - depth(a))[0];
      if (best && depth(best) > 0) {
        out.push(...flattenIssues(best, path));
        continue;
      }
    }
    const at = issuePath(path) || '(root)';
    if (issue.code === 'unrecognized_keys') {
      out.push(`${at}: unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}`);
    } else {
      out.push(`${at}: ${issue.message}`);
    }
  }
  return [...new Set(out)];
}

/**
 * Validates a run config and fills its defaults. Throws a UserError listing EVERY problem with its JSON path
 * (`adapters[1].r: r must be at least 1`), so a user fixes them in one go, before any work starts.
 */
export function parseRunConfig(input: unknown, source = 'run config'): RunConfig {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new UserError(`${source} must be a JSON object with "model", "adapters" and "data"`);
  }
  const r = RunConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const problems = flattenIssues(r.error.issues);
  throw new UserError(
    `${source} is invalid (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`,
  );
}

/** JSON Schema of the run config (input side: every defaulted field optional, defaults shown). */
export function runConfigJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(RunConfigSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

/** A fresh run id: `run-YYYYMMDD-HHMMSS-<6 hex>` (UTC), sortable by start time and valid under RUN_ID_PATTERN. */
export function newRunId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `run-${stamp}-${randomBytes(3).toString('hex')}`;
}

/** An eval task given as a file (a path or URI ending in .json/.jsonl), not a built-in task name. */
export function isTaskFile(task: string): boolean {
  return /\.jsonl?$/i.test(task) || task.includes('/');
}

/** The names of a config's adapter variants, in order (what the state machine's Map iterates over). */
export function variantNames(config: RunConfig): string[] {
  return config.adapters.map((v) => v.name);
}

/** The variant called `name`; a UserError listing the known ones otherwise. */
export function findVariant(config: RunConfig, name: string): RunVariant {
  const v = config.adapters.find((a) => a.name === name);
  if (!v) {
    throw new UserError(
      `the run has no variant "${name}"; its variants are ${variantNames(config).join(', ')}`,
    );
  }
  return v;
}

/**
 * The config in its input form with every default filled in: what config.json holds. Parsing it again gives the
 * same config (variants flattened back to `{name, ...adapter, initFrom?}`).
 */
export function runConfigToJson(config: RunConfig): Record<string, unknown> {
  return {
    ...config,
    adapters: config.adapters.map((v) => ({
      name: v.name,
      ...v.adapter,
      ...(v.initFrom !== undefined ? { initFrom: v.initFrom } : {}),
    })),
  };
}
