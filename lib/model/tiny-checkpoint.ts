/**
 * Generates a complete Hugging Face LLaMA checkpoint directory with random weights, for tests and examples:
 * config.json, weights (one file or shards + index), the tiny byte-level BPE tokenizer, tokenizer_config.json
 * with a chat template, and generation_config.json. Everything is deterministic in the seed, and each tensor's
 * values depend only on (seed, tensor name, shape), so e.g. a bf16 and a f32 checkpoint of the same seed hold
 * the same weights up to rounding, and adding layers does not change the existing ones.
 */
import { mkdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { UserError } from '../errors.ts';
import { registerCleanup, removeNow, removeStaleTempFiles } from '../output-cleanup.ts';
import { expectedTensorShapes, writeCheckpoint, type CheckpointTensorInput } from './checkpoint.ts';
import { parseLlamaConfig, type LlamaConfig } from './config.ts';
import { numElements, parseFloatDtype, torchDtypeName } from './dtype-convert.ts';
import { fillNormal, fnv1a, mulberry32 } from '../engine/random.ts';
import { buildTinyTokenizer } from './tiny-tokenizer.ts';

export type TinyDtype = 'float32' | 'float16' | 'bfloat16';

export interface TinyRopeScaling {
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export interface TinyCheckpointOptions {
  dir: string;
  seed?: number;
  /** Rows of the embedding and head; at least the tokenizer's size (default: the tokenizer's size, 512). */
  vocabSize?: number;
  hiddenSize?: number;
  intermediateSize?: number;
  numLayers?: number;
  numHeads?: number;
  numKvHeads?: number;
  /** Default hiddenSize / numHeads. */
  headDim?: number;
  dtype?: TinyDtype;
  shards?: number;
  tieWordEmbeddings?: boolean;
  ropeTheta?: number;
  /** Llama 3.1 style RoPE scaling; null/absent for plain RoPE. */
  ropeScaling?: TinyRopeScaling | null;
  maxPositionEmbeddings?: number;
  rmsNormEps?: number;
  /** Write into a non-empty directory (replacing the checkpoint files there). */
  force?: boolean;
  /**
   * Largest tensor allowed, in elements (default 2^28: one 1 GiB Float32Array while it is generated). The
   * real-scale benchmark raises it for LLaMA-3's 128256 × 4096 embedding.
   */
  maxTensorElements?: number;
}

export interface TinyCheckpoint {
  dir: string;
  config: LlamaConfig;
  files: string[];
  numParameters: number;
  bosId: number;
  eosId: number;
}

/** Standard deviation of projection, embedding and head weights (transformers' initializer_range). */
const INIT_STD = 0.02;
/** Norm weights are 1 + this · N(0, 1): near the usual ones, but not all equal, so tests notice if one is ignored. */
const NORM_JITTER = 0.1;

function positiveInt(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1)
    throw new UserError(`${name} must be a positive integer, got ${value}`);
  return value;
}

/** The config.json object of a tiny checkpoint (HF field names and layout). */
export function tinyConfigJson(
  opts: Omit<TinyCheckpointOptions, 'dir' | 'force' | 'seed' | 'shards' | 'maxTensorElements'>,
  tokenizer: { size: number; bosId: number; eosId: number },
): Record<string, unknown> {
  const hiddenSize = positiveInt(opts.hiddenSize ?? 64, 'hiddenSize');
  const numHeads = positiveInt(opts.numHeads ?? 4, 'numHeads');
  const numKvHeads = positiveInt(opts.numKvHeads ?? Math.min(2, numHeads), 'numKvHeads');
  const headDim = positiveInt(opts.headDim ?? hiddenSize / numHeads, 'headDim (hiddenSize / numHeads)');
  const vocabSize = positiveInt(opts.vocabSize ?? tokenizer.size, 'vocabSize');
  if (vocabSize < tokenizer.size) {
    throw new UserError(
      `vocabSize ${vocabSize} is smaller than the tiny tokenizer's ${tokenizer.size} tokens`,
    );
  }
  const rs = opts.ropeScaling ?? null;
  const maxPositionEmbeddings = positiveInt(opts.maxPositionEmbeddings ?? 2048, 'maxPositionEmbeddings');
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: tokenizer.bosId,
    eos_token_id: tokenizer.eosId,
    head_dim: headDim,
    hidden_act: 'silu',
    hidden_size: hiddenSize,
    initializer_range: INIT_STD,
    intermediate_size: positiveInt(opts.intermediateSize ?? 128, 'intermediateSize'),
    max_position_embeddings: maxPositionEmbeddings,
    mlp_bias: false,
    num_attention_heads: numHeads,
    num_hidden_layers: positiveInt(opts.numLayers ?? 2, 'numLayers'),
    num_key_value_heads: numKvHeads,
    pretraining_tp: 1,
    rms_norm_eps: opts.rmsNormEps ?? 1e-5,
    rope_scaling:
      rs === null
        ? null
        : {
            factor: rs.factor,
            low_freq_factor: rs.lowFreqFactor ?? 1.0,
            high_freq_factor: rs.highFreqFactor ?? 4.0,
            original_max_position_embeddings:
              rs.originalMaxPositionEmbeddings ?? Math.min(8192, maxPositionEmbeddings),
            rope_type: 'llama3',
          },
    rope_theta: opts.ropeTheta ?? 10000.0,
    tie_word_embeddings: opts.tieWordEmbeddings ?? false,
    torch_dtype: opts.dtype ?? 'float32',
    use_cache: true,
    vocab_size: vocabSize,
  };
}

/** The float32 values of one tensor: deterministic in (seed, name, shape). */
export function tinyTensorValues(seed: number, name: string, shape: readonly number[]): Float32Array {
  const rand = mulberry32((fnv1a(name) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0);
  const out = new Float32Array(numElements(shape));
  return name.endsWith('norm.weight')
    ? fillNormal(out, rand, NORM_JITTER, 1)
    : fillNormal(out, rand, INIT_STD);
}

/** A generated tensor is one Float32Array in memory; beyond this it is not a tiny model (1 GiB of float32). */
const MAX_TINY_TENSOR_ELEMENTS = 2 ** 28;

/**
 * Writes a tiny checkpoint; refuses a non-empty directory unless `force`. A directory this call created (or found
 * empty) is removed again (emptied) when the write fails or the process is interrupted, so a failed run leaves
 * nothing behind; with `force` into a non-empty directory, only the files being written are cleaned up.
 */
export async function writeTinyCheckpoint(opts: TinyCheckpointOptions): Promise<TinyCheckpoint> {
  const dtypeName = opts.dtype ?? 'float32';
  const dtype = parseFloatDtype(dtypeName);
  if (dtype === null || dtype === 'F64') {
    throw new UserError(`dtype must be float32, float16 or bfloat16, got "${dtypeName}"`);
  }
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new UserError(`seed must be a non-negative integer, got ${seed}`);
  const shards = positiveInt(opts.shards ?? 1, 'shards');

  let entries: string[] = [];
  let existed = true;
  try {
    entries = await readdir(opts.dir);
  } catch (err) {
    // ENOTDIR and the like reach the CLI, which names the path and the problem (userErrorFromFs).
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    existed = false;
  }
  if (entries.length > 0 && !opts.force) {
    throw new UserError(
      `${opts.dir} is not empty (${entries.length} entries); choose a new or empty directory, or pass --force to ` +
        'write the checkpoint there anyway',
    );
  }

  const maxPositionEmbeddings = opts.maxPositionEmbeddings ?? 2048;
  const tok = buildTinyTokenizer({ modelMaxLength: maxPositionEmbeddings });
  const configJson = tinyConfigJson({ ...opts, dtype: torchDtypeName(dtype) as TinyDtype }, tok);
  const config = parseLlamaConfig(configJson, 'tiny checkpoint options');

  const tensors = new Map<string, CheckpointTensorInput>();
  let numParameters = 0;
  for (const [name, shape] of expectedTensorShapes(config)) {
    const limit = opts.maxTensorElements ?? MAX_TINY_TENSOR_ELEMENTS;
    if (numElements(shape) > limit) {
      throw new UserError(
        `"${name}" would have ${numElements(shape)} elements (shape ${JSON.stringify(shape)}), more than a tiny ` +
          `test model's limit of ${limit}; choose smaller sizes`,
      );
    }
    numParameters += numElements(shape);
    // Generated when the writer reaches the tensor, so only one tensor is in memory at a time.
    tensors.set(name, { dtype, shape, data: () => tinyTensorValues(seed, name, shape) });
  }
  // What a failed or interrupted write must remove: the whole directory if it was absent or empty before.
  const removeOwnOutput = entries.length === 0;
  const removeSync = () => {
    if (!removeOwnOutput) return;
    removeNow(opts.dir);
    if (existed) mkdirSync(opts.dir);
  };
  const unregister = registerCleanup(removeSync);
  if (existed) await removeStaleTempFiles(opts.dir);
  try {
    return await writeTinyFiles(opts.dir, configJson, tensors, shards, tok, maxPositionEmbeddings, {
      config,
      numParameters,
    });
  } catch (err) {
    try {
      removeSync();
    } catch {
      // the write's own error says more than a failed cleanup would
    }
    throw err;
  } finally {
    unregister();
  }
}

async function writeTinyFiles(
  dir: string,
  configJson: Record<string, unknown>,
  tensors: Map<string, CheckpointTensorInput>,
  shards: number,
  tok: ReturnType<typeof buildTinyTokenizer>,
  maxPositionEmbeddings: number,
  info: { config: LlamaConfig; numParameters: number },
): Promise<TinyCheckpoint> {
  const written = await writeCheckpoint(dir, {
    config: configJson,
    tensors,
    numShards: shards,
    tokenizerJson: tok.tokenizerJson,
    tokenizerConfig: tok.tokenizerConfig,
    generationConfig: {
      bos_token_id: tok.bosId,
      // Like Llama 3 instruct: stop at the end of text or at the end of an assistant turn.
      eos_token_id: [tok.eosId, tok.eotId],
      do_sample: false,
      max_length: maxPositionEmbeddings,
    },
  });
  return { dir, ...info, files: written.files, bosId: tok.bosId, eosId: tok.eosId };
}
