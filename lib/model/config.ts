/**
 * The LLaMA-family architecture, read from a Hugging Face `config.json`.
 * Fields we do not support are rejected by name rather than silently ignored, because a model that loads but
 * computes something else is worse than one that refuses to load.
 */
import { z } from 'zod';
import { UserError } from '../errors.ts';

/** The seven linear projections of a LLaMA decoder layer, in HF naming. */
export const PROJECTION_NAMES = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
] as const;
export type ProjectionName = (typeof PROJECTION_NAMES)[number];

export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** `torch_dtype` / `dtype` as written, e.g. "bfloat16"; informational. */
  torchDtype: string | null;
  /** The raw JSON, kept so writers can round-trip fields we do not interpret (quantization_config, …). */
  raw: Record<string, unknown>;
}

const positiveInt = z.number().int().positive();
const ropeScalingSchema = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().positive().optional(),
    high_freq_factor: z.number().positive().optional(),
    original_max_position_embeddings: positiveInt.optional(),
    rope_theta: z.number().positive().optional(),
  })
  .passthrough();

const configSchema = z
  .object({
    architectures: z.array(z.string()).optional(),
    model_type: z.string().optional(),
    vocab_size: positiveInt,
    hidden_size: positiveInt,
    intermediate_size: positiveInt,
    num_hidden_layers: positiveInt,
    num_attention_heads: positiveInt,
    num_key_value_heads: positiveInt.optional(),
    head_dim: positiveInt.nullable().optional(),
    rms_norm_eps: z.number().positive().default(1e-6),
    rope_theta: z.number().positive().optional(),
    rope_scaling: ropeScalingSchema.nullable().optional(),
    rope_parameters: ropeScalingSchema.nullable().optional(),
    max_position_embeddings: positiveInt.default(2048),
    tie_word_embeddings: z.boolean().default(false),
    bos_token_id: z.number().int().nullable().optional(),
    eos_token_id: z
      .union([z.number().int(), z.array(z.number().int())])
      .nullable()
      .optional(),
    hidden_act: z.string().default('silu'),
    attention_bias: z.boolean().default(false),
    mlp_bias: z.boolean().default(false),
    pretraining_tp: z.number().int().default(1),
    torch_dtype: z.string().nullable().optional(),
    dtype: z.string().nullable().optional(),
  })
  .passthrough();

const SUPPORTED_ARCHITECTURES = new Set(['LlamaForCausalLM']);
const SUPPORTED_MODEL_TYPES = new Set(['llama']);

/** Parses and validates a config.json object. `source` names the file in error messages. */
export function parseLlamaConfig(json: unknown, source = 'config.json'): LlamaConfig {
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UserError(
      `${source}: field "${issue.path.join('.')}" is invalid: ${issue.message}. ` +
        'Is this a Hugging Face LLaMA-family config.json?',
    );
  }
  const c = parsed.data;
  const reject = (field: string, why: string) => {
    throw new UserError(`${source}: unsupported ${field}: ${why}`);
  };
  if (c.architectures && !c.architectures.every((a) => SUPPORTED_ARCHITECTURES.has(a))) {
    reject('architectures', `${JSON.stringify(c.architectures)}; moka supports LlamaForCausalLM`);
  }
  if (c.model_type !== undefined && !SUPPORTED_MODEL_TYPES.has(c.model_type)) {
    reject('model_type', `"${c.model_type}"; moka supports "llama"`);
  }
  if (c.hidden_act !== 'silu') reject('hidden_act', `"${c.hidden_act}"; only "silu" (SwiGLU) is supported`);
  if (c.attention_bias) reject('attention_bias', 'true; LLaMA projections have no bias');
  if (c.mlp_bias) reject('mlp_bias', 'true; LLaMA projections have no bias');
  if (c.pretraining_tp !== 1) reject('pretraining_tp', `${c.pretraining_tp}; only 1 is supported`);

  const numKvHeads = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % numKvHeads !== 0) {
    reject(
      'num_key_value_heads',
      `${numKvHeads} does not divide num_attention_heads ${c.num_attention_heads} (grouped-query attention needs it to)`,
    );
  }
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    reject(
      'head_dim',
      `${headDim}; it must be an even integer (hidden_size / num_attention_heads when absent)`,
    );
  }

  // transformers v5 moved rope settings into `rope_parameters`; accept both spellings.
  const rope = c.rope_scaling ?? c.rope_parameters ?? null;
  const ropeTheta = c.rope_theta ?? rope?.rope_theta ?? 10000;
  let ropeScaling: Llama3RopeScaling | null = null;
  const ropeType = rope ? (rope.rope_type ?? rope.type ?? 'default') : 'default';
  if (ropeType === 'llama3') {
    ropeScaling = {
      type: 'llama3',
      factor: rope!.factor ?? reject('rope_scaling.factor', 'missing for rope_type "llama3"'),
      lowFreqFactor: rope!.low_freq_factor ?? 1,
      highFreqFactor: rope!.high_freq_factor ?? 4,
      originalMaxPositionEmbeddings: rope!.original_max_position_embeddings ?? 8192,
    };
  } else if (ropeType !== 'default') {
    reject('rope_scaling', `rope_type "${ropeType}"; moka supports none (default) and "llama3"`);
  }

  const eos = c.eos_token_id;
  return {
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads,
    headDim,
    rmsNormEps: c.rms_norm_eps,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: c.max_position_embeddings,
    tieWordEmbeddings: c.tie_word_embeddings,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eos === undefined || eos === null ? [] : Array.isArray(eos) ? eos : [eos],
    torchDtype: c.torch_dtype ?? c.dtype ?? null,
    raw: json as Record<string, unknown>,
  };
}

/** `[out_features, in_features]` of every projection in one decoder layer (the HF `weight` layout). */
export function projectionShapes(cfg: LlamaConfig): Record<ProjectionName, { out: number; in: number }> {
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  return {
    q_proj: { out: q, in: cfg.hiddenSize },
    k_proj: { out: kv, in: cfg.hiddenSize },
    v_proj: { out: kv, in: cfg.hiddenSize },
    o_proj: { out: cfg.hiddenSize, in: q },
    gate_proj: { out: cfg.intermediateSize, in: cfg.hiddenSize },
    up_proj: { out: cfg.intermediateSize, in: cfg.hiddenSize },
    down_proj: { out: cfg.hiddenSize, in: cfg.intermediateSize },
  };
}

/** HF tensor name of a projection's weight, e.g. `model.layers.3.self_attn.q_proj.weight`. */
export function projectionWeightName(layer: number, proj: ProjectionName): string {
  const block = proj === 'gate_proj' || proj === 'up_proj' || proj === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${proj}.weight`;
}
