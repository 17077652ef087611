/**
 * The training section of the run config: a zod schema in which every field has a default and a description, so
 * `{}` is a valid (LLM-Adapters/QLoRA-like) configuration and the exported JSON Schema documents each field for
 * the console input. The pipeline issue owns the whole run config and embeds this section as `training`.
 */
import { z } from 'zod';
import { UserError } from '../errors.ts';
import { PROMPT_TEMPLATE_NAMES } from './prompt-templates.ts';
import { SCHEDULE_NAMES } from './schedules.ts';

export const DATASET_FORMATS = ['alpaca', 'commonsense', 'chat', 'text'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

const int = (what: string, min: number) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be a whole number` })
    .min(min, { error: `${what} must be at least ${min}` });

const num = (what: string) => z.number({ error: `${what} must be a number` }).finite();

export const TrainConfigSchema = z
  .strictObject({
    seed: int('seed', 0)
      .default(42)
      .describe(
        'Seed of the data order and the held-out split; the same seed gives bit-identical weights on CPU.',
      ),
    epochs: int('epochs', 1)
      .default(3)
      .describe('Passes over the training split (ignored when maxSteps is set).'),
    maxSteps: int('maxSteps', 1)
      .nullable()
      .default(null)
      .describe(
        'Optimizer steps to run; overrides epochs (the data order repeats with a new shuffle each epoch).',
      ),
    microBatchSize: int('microBatchSize', 1)
      .default(4)
      .describe('Sequences per ONNX Runtime run (per micro-batch); bounds activation memory.'),
    gradientAccumulation: int('gradientAccumulation', 1)
      .default(1)
      .describe('Micro-batches per optimizer step; effective batch = microBatchSize × gradientAccumulation.'),
    learningRate: num('learningRate')
      .positive({ error: 'learningRate must be positive' })
      .default(2e-4)
      .describe('Peak learning rate of the default parameter group (adapter factors).'),
    gateLearningRate: num('gateLearningRate')
      .positive({ error: 'gateLearningRate must be positive' })
      .nullable()
      .default(null)
      .describe('Peak learning rate of MoKA gate parameters; null = learningRate.'),
    weightDecay: num('weightDecay')
      .min(0, { error: 'weightDecay must be 0 or more' })
      .default(0)
      .describe('Decoupled (AdamW) weight decay of the default group.'),
    gateWeightDecay: num('gateWeightDecay')
      .min(0, { error: 'gateWeightDecay must be 0 or more' })
      .default(0)
      .describe(
        'Decoupled weight decay of gate parameters (0: gates are not pulled towards uniform mixing).',
      ),
    adamBeta1: num('adamBeta1')
      .min(0)
      .lt(1, { error: 'adamBeta1 must be below 1' })
      .default(0.9)
      .describe('AdamW β1.'),
    adamBeta2: num('adamBeta2')
      .min(0)
      .lt(1, { error: 'adamBeta2 must be below 1' })
      .default(0.999)
      .describe('AdamW β2.'),
    adamEpsilon: num('adamEpsilon')
      .positive({ error: 'adamEpsilon must be positive' })
      .default(1e-8)
      .describe('AdamW ε (added outside the square root, as torch does).'),
    schedule: z
      .enum(SCHEDULE_NAMES, { error: `schedule must be one of ${SCHEDULE_NAMES.join(', ')}` })
      .default('linear')
      .describe('Learning-rate decay after warmup, as transformers get_*_schedule_with_warmup.'),
    cosineCycles: num('cosineCycles')
      .positive()
      .default(0.5)
      .describe('Cosine schedule only: transformers num_cycles (0.5 = one half-cosine down to 0).'),
    warmupSteps: int('warmupSteps', 0).default(0).describe('Linear warmup steps from 0 to the peak rate.'),
    warmupRatio: num('warmupRatio')
      .min(0)
      .lt(1, { error: 'warmupRatio must be below 1' })
      .default(0)
      .describe('Warmup as a fraction of the total steps (⌈ratio · total⌉); use warmupSteps or warmupRatio.'),
    maxGradNorm: num('maxGradNorm')
      .min(0, { error: 'maxGradNorm must be 0 or more' })
      .default(1)
      .describe(
        'Global L2 gradient-norm clipping threshold; 0 disables clipping (the norm is still logged).',
      ),
    maxLength: int('maxLength', 2).default(256).describe('Maximum tokens per sample (BOS and EOS included).'),
    truncation: z
      .enum(['truncate', 'drop'], { error: 'truncation must be "truncate" or "drop"' })
      .default('truncate')
      .describe(
        'Over-long samples: cut at maxLength (the EOS is lost), or leave them out. Both are counted.',
      ),
    trainOnPrompt: z
      .boolean()
      .default(false)
      .describe(
        'Count prompt tokens in the loss too (LLM-Adapters train_on_inputs); default: response only.',
      ),
    promptTemplate: z
      .enum(['auto', ...PROMPT_TEMPLATE_NAMES] as const, {
        error: `promptTemplate must be one of auto, ${PROMPT_TEMPLATE_NAMES.join(', ')}`,
      })
      .default('auto')
      .describe(
        'How instruction records become text; auto: alpaca for Alpaca records, llm-adapters for commonsense.',
      ),
    datasetFormat: z
      .enum(['auto', ...DATASET_FORMATS] as const, {
        error: `datasetFormat must be one of auto, ${DATASET_FORMATS.join(', ')}`,
      })
      .default('auto')
      .describe('Record format; auto detects it per record from its fields.'),
    maxBadRecordFraction: num('maxBadRecordFraction')
      .min(0)
      .max(1)
      .default(0.01)
      .describe(
        'Bad records up to this fraction are skipped with a warning; above it the run fails listing them.',
      ),
    groupByLength: z
      .boolean()
      .default(true)
      .describe('Sort by length within seeded mega-batches (transformers group_by_length): less padding.'),
    packing: z
      .boolean()
      .default(false)
      .describe('Pack several samples into each row with block-diagonal attention (no cross-sample leaks).'),
    padToMultipleOf: int('padToMultipleOf', 1)
      .default(32)
      .describe(
        'Pad sequence lengths up to a multiple of this: each distinct length compiles an ORT session.',
      ),
    evalFraction: num('evalFraction')
      .min(0)
      .max(0.5, { error: 'evalFraction must be at most 0.5' })
      .default(0.05)
      .describe('Held-out fraction of the training records (seeded) when no eval file is given.'),
    evalRecords: int('evalRecords', 1)
      .nullable()
      .default(null)
      .describe('Held-out record count instead of a fraction (LLM-Adapters val_set_size).'),
    evalEvery: int('evalEvery', 0)
      .default(100)
      .describe(
        'Evaluate the held-out loss every N optimizer steps (also before the first and after the last); 0: only then.',
      ),
    evalBatchSize: int('evalBatchSize', 1)
      .nullable()
      .default(null)
      .describe('Eval micro-batch; null = microBatchSize.'),
    earlyStoppingPatience: int('earlyStoppingPatience', 1)
      .nullable()
      .default(null)
      .describe('Stop after this many evaluations without an improvement of the held-out loss; null: never.'),
    earlyStoppingMinDelta: num('earlyStoppingMinDelta')
      .min(0)
      .default(0)
      .describe('An evaluation improves when it beats the best loss by more than this.'),
    checkpointEvery: int('checkpointEvery', 1)
      .default(100)
      .describe('Write checkpoints/step-N every N optimizer steps (and at the end and on SIGTERM).'),
    keepCheckpoints: int('keepCheckpoints', 1).default(3).describe('Complete checkpoints to keep (newest).'),
    logEvery: int('logEvery', 1)
      .default(10)
      .describe('Progress lines every N steps when not on a terminal (metrics.jsonl gets every step).'),
    precision: z
      .enum(['fp32', 'fp16'], { error: 'precision must be "fp32" or "fp16"' })
      .default('fp32')
      .describe(
        'Activation precision. fp16: float16 activations (frozen weights cast to float16 in the graph, the loss in fp32) on GPU providers (cuda, webgpu, auto); the cpu provider has no float16 kernels, so there fp16 falls back to fp32 with a warning. Adapter master weights, gradients and the optimizer are always fp32.',
      ),
    lossScale: z
      .number({ error: 'lossScale must be a number' })
      .positive({ error: 'lossScale must be positive' })
      .default(1024)
      .describe(
        'fp16 only: static loss scale. The loss is multiplied by it before the backward and the gradients divided by it after, so small gradients do not underflow float16; a run stops with an error naming this field if gradients overflow.',
      ),
  })
  .superRefine((c, ctx) => {
    if (c.warmupSteps > 0 && c.warmupRatio > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['warmupSteps'],
        message: `give warmupSteps (${c.warmupSteps}) or warmupRatio (${c.warmupRatio}), not both`,
      });
    }
    if (c.maxSteps !== null && c.warmupSteps > c.maxSteps) {
      ctx.addIssue({
        code: 'custom',
        path: ['warmupSteps'],
        message:
          `warmupSteps ${c.warmupSteps} is more than maxSteps ${c.maxSteps}: the learning rate would never reach ` +
          'its peak; lower warmupSteps, or use warmupRatio (a fraction of the steps)',
      });
    }
  });

export type TrainConfig = z.output<typeof TrainConfigSchema>;
export type TrainConfigInput = z.input<typeof TrainConfigSchema>;

/** Every default, as a plain object (for docs and for `{}` configs). */
export function defaultTrainConfig(): TrainConfig {
  return TrainConfigSchema.parse({});
}

/** The training section's field names, in schema order. */
export const TRAIN_CONFIG_FIELDS: readonly string[] = Object.keys(TrainConfigSchema.shape);

/** The parsed section, or each problem as "field: message" (unknown fields listed with the known ones). */
export function checkTrainConfig(input: unknown): { config: TrainConfig } | { problems: string[] } {
  const r = TrainConfigSchema.safeParse(input ?? {});
  if (r.success) return { config: r.data };
  const problems = r.error.issues.map((i) => {
    const path = i.path.length ? i.path.join('.') : '(root)';
    if (i.code === 'unrecognized_keys') {
      const known = TRAIN_CONFIG_FIELDS.join(', ');
      return `${path}: unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}; known fields: ${known}`;
    }
    return `${path}: ${i.message}`;
  });
  return { problems };
}

/** Validates a training section; a UserError lists every problem with its field path. */
export function parseTrainConfig(input: unknown, source = 'training config'): TrainConfig {
  const r = checkTrainConfig(input);
  if ('config' in r) return r.config;
  throw new UserError(`${source} is invalid:\n  ${r.problems.join('\n  ')}`);
}

/** JSON Schema of the training section (input side: defaults shown, every field optional). */
export function trainConfigJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(TrainConfigSchema, { io: 'input' }) as Record<string, unknown>;
}

/**
 * Fields that cannot change the trained weights or the loss curve. They are left out of the run fingerprint, so a
 * resumed run may change them (e.g. checkpoint more often on a spot instance).
 */
export const NON_TRAJECTORY_FIELDS = ['checkpointEvery', 'keepCheckpoints', 'logEvery'] as const;

/** The effective learning rate of gates. */
export function gateLearningRate(c: TrainConfig): number {
  return c.gateLearningRate ?? c.learningRate;
}

export type Precision = TrainConfig['precision'];

/**
 * The precision a run actually uses. Float16 activations need a provider with float16 kernels for every op of the
 * step program (CUDA, WebGPU); the CPU provider lacks most of them, so fp16 on CPU falls back to fp32 with a
 * warning rather than failing a config written for a GPU.
 */
export function resolvePrecision(
  requested: Precision,
  provider: 'cpu' | 'cuda' | 'webgpu',
  warn: (message: string) => void,
): Precision {
  if (requested === 'fp16' && provider === 'cpu') {
    warn('precision fp16 is not supported by the CPU provider; training in fp32 instead');
    return 'fp32';
  }
  return requested;
}
