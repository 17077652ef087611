/**
 * Hugging Face LLaMA checkpoint directories: `config.json`, weights as one `model.safetensors` or as shards listed
 * by `model.safetensors.index.json`, and the tokenizer files when present.
 *
 * Opening validates the whole directory against its config (every tensor a LLaMA of that config needs, with the
 * shape the config implies) before any weight is read, so a wrong or incomplete download fails at once with a
 * message naming the tensor, instead of deep inside graph building. Tensor data is read on demand, per tensor.
 *
 * Writing (`writeCheckpoint`) puts weights first and `config.json` last, each file atomically (temp + rename), and
 * removes any `config.json` before it starts: a directory without `config.json` is incomplete, and
 * `openCheckpoint` says so.
 */
import { readdir, rm, stat, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import {
  PROJECTION_NAMES,
  parseLlamaConfig,
  projectionShapes,
  projectionWeightName,
  type LlamaConfig,
} from './config.ts';
import {
  decodeFloat32,
  encodeFloat32,
  DTYPE_BYTES,
  firstNonFinite,
  isFloatDtype,
  type FloatDtype,
  type SafetensorsDtype,
} from './dtype-convert.ts';
import { SafetensorsFile, SafetensorsWriter, tensorByteLength, type TensorSpec } from './safetensors.ts';
import { Tokenizer } from './tokenizer.ts';

export const CONFIG_FILE = 'config.json';
export const SINGLE_WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';
export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const GENERATION_CONFIG_FILE = 'generation_config.json';
/** The chat template as a file of its own: Jinja text (transformers >= 4.47 saves it there), or processor-style JSON. */
export const CHAT_TEMPLATE_JINJA_FILE = 'chat_template.jinja';
export const CHAT_TEMPLATE_JSON_FILE = 'chat_template.json';

/** Old conversions store RoPE's inverse frequencies as a buffer; they are recomputed from the config, never read. */
const IGNORED_TENSOR = /(^|\.)rotary_emb\.inv_freq$/;

/** `model-00001-of-00004.safetensors`, the HF shard naming. */
export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}
const SHARD_FILE = /^model-\d{5}-of-\d{5}\.safetensors$/;

export interface CheckpointTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
  /** The safetensors file holding the tensor, relative to the checkpoint directory. */
  file: string;
}

/** Every tensor a LLaMA of this config has, with its shape; lm_head only when embeddings are not tied. */
export function expectedTensorShapes(cfg: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [cfg.vocabSize, cfg.hiddenSize]);
  const shapes = projectionShapes(cfg);
  for (let i = 0; i < cfg.numLayers; i++) {
    m.set(`model.layers.${i}.input_layernorm.weight`, [cfg.hiddenSize]);
    for (const p of PROJECTION_NAMES) m.set(projectionWeightName(i, p), [shapes[p].out, shapes[p].in]);
    m.set(`model.layers.${i}.post_attention_layernorm.weight`, [cfg.hiddenSize]);
  }
  m.set('model.norm.weight', [cfg.hiddenSize]);
  if (!cfg.tieWordEmbeddings) m.set('lm_head.weight', [cfg.vocabSize, cfg.hiddenSize]);
  return m;
}

function listSome(names: string[], max = 5): string {
  const shown = names
    .slice(0, max)
    .map((n) => `"${n}"`)
    .join(', ');
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

function describeConfig(cfg: LlamaConfig): string {
  return (
    `vocab_size=${cfg.vocabSize}, hidden_size=${cfg.hiddenSize}, intermediate_size=${cfg.intermediateSize}, ` +
    `num_hidden_layers=${cfg.numLayers}, num_attention_heads=${cfg.numHeads}, ` +
    `num_key_value_heads=${cfg.numKvHeads}, head_dim=${cfg.headDim}, tie_word_embeddings=${cfg.tieWordEmbeddings}`
  );
}

/**
 * Checks tensor specs against what the config implies: shapes, presence, float dtypes. `source` names the
 * directory. lm_head is checked when present even if embeddings are tied (some exports keep a copy).
 */
export function validateLlamaTensors(
  cfg: LlamaConfig,
  tensors: ReadonlyMap<string, Pick<TensorSpec, 'dtype' | 'shape'>>,
  source: string,
): void {
  const expected = expectedTensorShapes(cfg);
  if (cfg.tieWordEmbeddings && tensors.has('lm_head.weight')) {
    expected.set('lm_head.weight', [cfg.vocabSize, cfg.hiddenSize]);
  }
  const wrongShape: string[] = [];
  const wrongDtype: string[] = [];
  const missing: string[] = [];
  for (const [name, shape] of expected) {
    const t = tensors.get(name);
    if (!t) {
      missing.push(name);
      continue;
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      wrongShape.push(
        `"${name}" has shape ${JSON.stringify(t.shape)}, but config.json implies ${JSON.stringify(shape)}`,
      );
    }
    if (!isFloatDtype(t.dtype)) wrongDtype.push(`"${name}" (${t.dtype})`);
  }
  if (wrongShape.length > 0) {
    const more = wrongShape.length > 3 ? `; and ${wrongShape.length - 3} more` : '';
    throw new UserError(
      `${source}: tensor shapes do not match config.json: ${wrongShape.slice(0, 3).join('; ')}${more}. ` +
        `config.json says ${describeConfig(cfg)}; the weights and the config are from different models.`,
    );
  }
  if (missing.length > 0) {
    throw new UserError(
      `${source}: ${missing.length} tensor(s) a LLaMA with this config.json needs are missing: ${listSome(missing)}. ` +
        `config.json says ${describeConfig(cfg)}; is the download incomplete, or are the weights from another model?`,
    );
  }
  if (wrongDtype.length > 0) {
    throw new UserError(
      `${source}: weights must be F32, F16, BF16 or F64, but ${listSome(wrongDtype)} are not. ` +
        'A pre-quantized checkpoint cannot be used as a base model; start from the original weights.',
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readJson(path: string, what: string): Promise<unknown> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new UserError(`${path}: cannot read ${what} (${(err as Error).message})`);
  }
  let text: string;
  try {
    // fatal: invalid bytes in a tokenizer's vocabulary would otherwise become U+FFFD tokens without a word.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new UserError(`${path}: ${what} is not valid UTF-8; re-download or fix it`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UserError(
      `${path}: ${what} is not valid JSON (${(err as Error).message}); re-download or fix it`,
    );
  }
}

async function readJsonObjectIfPresent(path: string, what: string): Promise<Record<string, unknown> | null> {
  if (!(await exists(path))) return null;
  const json = await readJson(path, what);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new UserError(`${path}: ${what} must be a JSON object`);
  }
  return json as Record<string, unknown>;
}

/** A chat template stored beside tokenizer_config.json rather than in it. */
export interface ChatTemplateFile {
  file: typeof CHAT_TEMPLATE_JINJA_FILE | typeof CHAT_TEMPLATE_JSON_FILE;
  /** The Jinja text (a string, or for chat_template.json whatever its `chat_template` field holds). */
  template: unknown;
}

/** chat_template.jinja, else chat_template.json (`{"chat_template": ...}`), else null. */
async function readChatTemplateFile(dir: string): Promise<ChatTemplateFile | null> {
  const jinjaPath = join(dir, CHAT_TEMPLATE_JINJA_FILE);
  if (await exists(jinjaPath)) {
    try {
      return { file: CHAT_TEMPLATE_JINJA_FILE, template: await readFile(jinjaPath, 'utf8') };
    } catch (err) {
      throw new UserError(`${jinjaPath}: cannot read the chat template (${(err as Error).message})`);
    }
  }
  const jsonPath = join(dir, CHAT_TEMPLATE_JSON_FILE);
  const json = await readJsonObjectIfPresent(jsonPath, 'the chat template file');
  if (json === null) return null;
  if (json.chat_template === undefined) {
    throw new UserError(
      `${jsonPath}: no "chat_template" field; it should hold {"chat_template": "<jinja text>"}`,
    );
  }
  return { file: CHAT_TEMPLATE_JSON_FILE, template: json.chat_template };
}

export interface OpenCheckpointOptions {
  /**
   * Check every tensor a LLaMA of this config needs against the weights (default true). Turn off only for
   * directories that are not plain LLaMA weights (e.g. a quantized layout with its own checks).
   */
  validate?: boolean;
}

/** An open checkpoint directory. Holds the safetensors files open until `close()`. */
export class Checkpoint {
  private tokenizerCache: Tokenizer | null = null;

  constructor(
    readonly dir: string,
    readonly config: LlamaConfig,
    /** The parsed tokenizer.json, generation_config.json and tokenizer_config.json, or null when absent. */
    readonly tokenizerJson: Record<string, unknown> | null,
    readonly tokenizerConfig: Record<string, unknown> | null,
    readonly generationConfig: Record<string, unknown> | null,
    private readonly files: ReadonlyMap<string, SafetensorsFile>,
    private readonly tensors: ReadonlyMap<string, CheckpointTensorInfo>,
    /** chat_template.jinja or chat_template.json, when the directory has one. */
    readonly chatTemplateFile: ChatTemplateFile | null = null,
  ) {}

  /** The safetensors files, relative to `dir`. */
  weightFiles(): string[] {
    return [...this.files.keys()];
  }

  /** Tensor names in file order (rotary_emb.inv_freq buffers excluded). */
  tensorNames(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): CheckpointTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new UserError(`${this.dir}: the checkpoint has no tensor "${name}"`);
    return t;
  }

  /** The file (path under `dir`) and absolute byte range holding the tensor's stored bytes, for in-place use. */
  location(name: string): { file: string; offset: number; length: number } {
    const file = this.file(name);
    return { file: file.path, ...file.byteRange(name) };
  }

  /**
   * The stored bytes. Every read of a float tensor is checked for NaN/±Infinity (one pass over bytes already in
   * memory): a non-finite base weight is a UserError naming the tensor and the position, wherever weights are read
   * (generate, score, train, merge, dequantize, quantize), instead of NaN logits, NUL text or a "diverged" run.
   */
  async readRaw(name: string): Promise<Uint8Array> {
    const bytes = await this.file(name).readRaw(name);
    this.checkFinite(name, bytes, 0);
    return bytes;
  }

  /** Rows `[start, end)` of the first dimension, as stored bytes (checked like `readRaw`). */
  async readRows(name: string, start: number, end: number): Promise<Uint8Array> {
    const bytes = await this.file(name).readRows(name, start, end);
    this.checkFinite(name, bytes, start);
    return bytes;
  }

  /** The tensor as float32 (checked like `readRaw`). */
  async readFloat32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    if (!isFloatDtype(info.dtype)) return this.file(name).readFloat32(name); // its error names the dtype
    const bytes = await this.readRaw(name);
    // readRaw's buffer is fresh and ours: view F32 in place instead of copying a possibly huge tensor.
    if (info.dtype === 'F32') return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    return decodeFloat32(info.dtype, bytes);
  }

  /**
   * Checks a tensor for NaN/±Infinity without holding it: reads it in row blocks of about `blockBytes`. For
   * tensors that are used in place (float32 weights handed to ONNX Runtime by file range) and so never read here.
   */
  async assertFinite(name: string, blockBytes = 16 * 2 ** 20): Promise<void> {
    const info = this.info(name);
    if (!isFloatDtype(info.dtype)) return;
    const rows = info.shape.length === 0 ? 1 : info.shape[0]!;
    if (info.shape.length === 0) {
      await this.readRaw(name);
      return;
    }
    const rowBytes = rows === 0 ? 1 : Math.max(1, info.byteLength / rows);
    const step = Math.max(1, Math.floor(blockBytes / rowBytes));
    for (let r = 0; r < rows; r += step) await this.readRows(name, r, Math.min(rows, r + step));
  }

  /** Throws when `bytes` (rows from `startRow` on) of tensor `name` hold a NaN or infinity. */
  private checkFinite(name: string, bytes: Uint8Array, startRow: number): void {
    const info = this.info(name);
    const at = firstNonFinite(info.dtype, bytes);
    if (at < 0) return;
    const rowElements = info.shape.slice(1).reduce((a, b) => a * b, 1);
    let flat = startRow * rowElements + at;
    const index: number[] = [];
    for (let d = info.shape.length - 1; d >= 0; d--) {
      index.unshift(flat % info.shape[d]!);
      flat = Math.floor(flat / info.shape[d]!);
    }
    const size = DTYPE_BYTES[info.dtype as FloatDtype];
    const value = decodeFloat32(info.dtype, bytes.slice(at * size, (at + 1) * size))[0];
    throw new UserError(
      `${join(this.dir, info.file)}: tensor "${name}" holds a non-finite weight (${value} at [${index.join(', ')}]); ` +
        'the checkpoint is corrupt (a failed conversion, training run or download?): re-create or re-download it',
    );
  }

  /**
   * The checkpoint's tokenizer. End-of-sequence ids also include those of config.json and
   * generation_config.json (Llama 3 instruct models stop on `<|eot_id|>` as well as `<|end_of_text|>`).
   *
   * The chat template is tokenizer_config.json's `chat_template`, with the files newer transformers save it in:
   * chat_template.jinja takes priority over the config's field (as in transformers' from_pretrained), and
   * chat_template.json (the processor-style `{"chat_template": ...}`) is used when neither has one.
   */
  tokenizer(): Tokenizer {
    this.tokenizerCache ??= buildTokenizer(this.dir, {
      tokenizerJson: this.tokenizerJson,
      tokenizerConfig: this.tokenizerConfig,
      generationConfig: this.generationConfig,
      chatTemplateFile: this.chatTemplateFile,
      configEosIds: this.config.eosTokenIds,
    });
    return this.tokenizerCache;
  }

  async close(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => f.close()));
  }

  private file(name: string): SafetensorsFile {
    return this.files.get(this.info(name).file)!;
  }
}

interface TokenizerFiles {
  tokenizerJson: Record<string, unknown> | null;
  tokenizerConfig: Record<string, unknown> | null;
  generationConfig: Record<string, unknown> | null;
  chatTemplateFile: ChatTemplateFile | null;
  /** config.json's eos_token_id(s). */
  configEosIds: readonly number[];
}

/** The tokenizer of a model directory from its files; see `Checkpoint.tokenizer`. */
function buildTokenizer(dir: string, f: TokenizerFiles): Tokenizer {
  if (!f.tokenizerJson) {
    throw new UserError(
      `${dir}: no ${TOKENIZER_FILE}; moka needs the fast-tokenizer file (copy it from the model repository)`,
    );
  }
  const gen = f.generationConfig?.eos_token_id;
  const genEos =
    typeof gen === 'number' ? [gen] : Array.isArray(gen) ? gen.filter((x) => typeof x === 'number') : [];
  let config = f.tokenizerConfig ?? {};
  let chatTemplateOrigin = join(dir, TOKENIZER_CONFIG_FILE);
  const file = f.chatTemplateFile;
  if (file && (file.file === CHAT_TEMPLATE_JINJA_FILE || config.chat_template == null)) {
    config = { ...config, chat_template: file.template };
    chatTemplateOrigin = join(dir, file.file);
  }
  return Tokenizer.fromJson(f.tokenizerJson, config, {
    source: join(dir, TOKENIZER_FILE),
    extraEosIds: [...f.configEosIds, ...genEos],
    chatTemplateOrigin,
  });
}

/**
 * The tokenizer of a model directory, read from its tokenizer files (and config.json's eos_token_id when there is
 * one) without opening any weights: `moka tokenize` works on any model directory, 4-bit ones included.
 */
export async function openTokenizer(dir: string): Promise<Tokenizer> {
  let dirStat;
  try {
    dirStat = await stat(dir);
  } catch {
    throw new UserError(`${dir}: no such directory; give the path of a Hugging Face model directory`);
  }
  if (!dirStat.isDirectory()) throw new UserError(`${dir}: not a directory; give the model directory`);
  const [configJson, tokenizerJson, tokenizerConfig, generationConfig, chatTemplateFile] = await Promise.all([
    readJsonObjectIfPresent(join(dir, CONFIG_FILE), 'the model config'),
    readJsonObjectIfPresent(join(dir, TOKENIZER_FILE), 'the tokenizer'),
    readJsonObjectIfPresent(join(dir, TOKENIZER_CONFIG_FILE), 'the tokenizer config'),
    readJsonObjectIfPresent(join(dir, GENERATION_CONFIG_FILE), 'the generation config'),
    readChatTemplateFile(dir),
  ]);
  const eos = configJson?.eos_token_id;
  const configEosIds =
    typeof eos === 'number' ? [eos] : Array.isArray(eos) ? eos.filter((x) => typeof x === 'number') : [];
  return buildTokenizer(dir, {
    tokenizerJson,
    tokenizerConfig,
    generationConfig,
    chatTemplateFile,
    configEosIds,
  });
}

/** Opens and validates a HF checkpoint directory; see the module comment. */
export async function openCheckpoint(dir: string, opts: OpenCheckpointOptions = {}): Promise<Checkpoint> {
  let dirStat;
  try {
    dirStat = await stat(dir);
  } catch {
    throw new UserError(`${dir}: no such directory; give the path of a Hugging Face model directory`);
  }
  if (!dirStat.isDirectory()) {
    throw new UserError(`${dir}: not a directory; give the directory that holds config.json and the weights`);
  }
  const configPath = join(dir, CONFIG_FILE);
  if (!(await exists(configPath))) {
    throw new UserError(
      `${dir}: no ${CONFIG_FILE}. Is this a Hugging Face model directory? (A directory whose write was ` +
        'interrupted also lacks it, since config.json is written last; re-create it.)',
    );
  }
  const configJson = await readJson(configPath, 'the model config');
  const config = parseLlamaConfig(configJson, configPath);

  // Which file holds which tensor. transformers prefers a single model.safetensors over an index; so do we.
  const fileOf = new Map<string, string>();
  const singlePath = join(dir, SINGLE_WEIGHTS_FILE);
  const indexPath = join(dir, WEIGHTS_INDEX_FILE);
  let fileNames: string[];
  let fromIndex = false;
  if (await exists(singlePath)) {
    fileNames = [SINGLE_WEIGHTS_FILE];
  } else if (await exists(indexPath)) {
    fromIndex = true;
    const index = await readJson(indexPath, 'the shard index');
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
      throw new UserError(`${indexPath}: no "weight_map" object (tensor name → shard file); re-download it`);
    }
    for (const [name, file] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof file !== 'string' || file.length === 0 || basename(file) !== file) {
        throw new UserError(
          `${indexPath}: weight_map["${name}"] is ${JSON.stringify(file)}, not a file name in the same directory`,
        );
      }
      fileOf.set(name, file);
    }
    fileNames = [...new Set(fileOf.values())];
    for (const f of fileNames) {
      if (!(await exists(join(dir, f)))) {
        const some = [...fileOf].filter(([, v]) => v === f).map(([k]) => k);
        throw new UserError(
          `${dir}: ${WEIGHTS_INDEX_FILE} lists shard "${f}" (holding ${listSome(some, 2)}), but the file is ` +
            'missing; the download is incomplete.',
        );
      }
    }
  } else {
    const entries = await readdir(dir);
    const other = entries.filter((e) => e.endsWith('.safetensors'));
    const bins = entries.filter((e) => e.endsWith('.bin') || e.endsWith('.pt') || e.endsWith('.pth'));
    const hint =
      other.length > 0
        ? ` Found ${listSome(other, 3)}, but without ${WEIGHTS_INDEX_FILE} it is unclear which tensors they hold.`
        : bins.length > 0
          ? ` Found PyTorch weights (${listSome(bins, 3)}); convert them to safetensors first ` +
            '(e.g. save_pretrained(..., safe_serialization=True) in transformers).'
          : '';
    throw new UserError(`${dir}: no ${SINGLE_WEIGHTS_FILE} and no ${WEIGHTS_INDEX_FILE}.${hint}`);
  }

  const files = new Map<string, SafetensorsFile>();
  try {
    for (const f of fileNames) files.set(f, await SafetensorsFile.open(join(dir, f)));
    const tensors = new Map<string, CheckpointTensorInfo>();
    for (const [f, file] of files) {
      for (const name of file.names()) {
        if (IGNORED_TENSOR.test(name)) continue;
        // A sharded checkpoint's index is authoritative; a tensor it does not list is not part of the model.
        if (fromIndex && fileOf.get(name) !== f) continue;
        const { dtype, shape, byteLength } = file.info(name);
        tensors.set(name, { name, dtype, shape, byteLength, file: f });
      }
    }
    if (fromIndex) {
      for (const [name, f] of fileOf) {
        if (!IGNORED_TENSOR.test(name) && !tensors.has(name)) {
          throw new UserError(
            `${dir}: ${WEIGHTS_INDEX_FILE} places tensor "${name}" in "${f}", but that file has no such tensor; ` +
              'the index and the shards do not belong together (re-download them).',
          );
        }
      }
    }
    if (opts.validate !== false) validateLlamaTensors(config, tensors, dir);

    const [tokenizerJson, tokenizerConfig, generationConfig, chatTemplateFile] = await Promise.all([
      readJsonObjectIfPresent(join(dir, TOKENIZER_FILE), 'the tokenizer'),
      readJsonObjectIfPresent(join(dir, TOKENIZER_CONFIG_FILE), 'the tokenizer config'),
      readJsonObjectIfPresent(join(dir, GENERATION_CONFIG_FILE), 'the generation config'),
      readChatTemplateFile(dir),
    ]);
    return new Checkpoint(
      dir,
      config,
      tokenizerJson,
      tokenizerConfig,
      generationConfig,
      files,
      tensors,
      chatTemplateFile,
    );
  } catch (err) {
    await Promise.all([...files.values()].map((f) => f.close()));
    throw err;
  }
}

function jsonText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/**
 * One tensor to write. `data` is its little-endian bytes (any typed array, taken byte for byte), or a
 * Float32Array of values converted to `dtype` when `dtype` is F16/BF16/F64, or a function producing either,
 * called when the writer reaches the tensor (so a big export need not hold all tensors at once).
 */
export interface CheckpointTensorInput {
  dtype: SafetensorsDtype;
  shape: number[];
  data: ArrayBufferView | (() => ArrayBufferView | Promise<ArrayBufferView>);
}

export interface WriteCheckpointOptions {
  /** The config.json object; it must parse as a LLaMA config and match the tensors. */
  config: Record<string, unknown>;
  /** Tensors by name, written in this order. */
  tensors: Record<string, CheckpointTensorInput> | ReadonlyMap<string, CheckpointTensorInput>;
  /** Start a new shard before a tensor that would take the current one past this many bytes. */
  shardSizeBytes?: number;
  /** Alternatively, split into exactly this many shards of roughly equal size. */
  numShards?: number;
  tokenizerJson?: unknown;
  tokenizerConfig?: Record<string, unknown>;
  generationConfig?: Record<string, unknown>;
  /** safetensors `__metadata__`; HF writes {"format": "pt"}, which is the default. */
  metadata?: Record<string, string>;
}

export interface WrittenCheckpoint {
  dir: string;
  /** Every file written, relative to `dir`, in write order (config.json last). */
  files: string[];
  /** Sum of tensor bytes (the index's `metadata.total_size`). */
  totalSize: number;
}

/**
 * Groups item indices (tensors, or groups of tensors that must share a file) into shards, in order: by a byte
 * budget (a new shard starts before an item that would take the current one past it; an item larger than the
 * budget gets a shard of its own), or into `numShards` non-empty groups of similar size.
 */
export function planShards(sizes: number[], shardSizeBytes?: number, numShards?: number): number[][] {
  const all = sizes.map((_, i) => i);
  if (numShards !== undefined) {
    if (!Number.isInteger(numShards) || numShards < 1) {
      throw new UserError(`numShards must be a positive integer, got ${numShards}`);
    }
    if (numShards > sizes.length) {
      throw new UserError(
        `cannot split ${sizes.length} tensors into ${numShards} shards (at most one per tensor)`,
      );
    }
    const total = sizes.reduce((a, b) => a + b, 0);
    const before: number[] = [];
    let acc = 0;
    for (const s of sizes) {
      before.push(acc);
      acc += s;
    }
    // Boundary k is the first tensor starting at or past k/numShards of the bytes, kept so every shard is non-empty.
    const bounds = [0];
    for (let k = 1; k < numShards; k++) {
      let b = before.findIndex((x) => x >= (total * k) / numShards);
      if (b < 0) b = sizes.length;
      b = Math.max(b, bounds[k - 1]! + 1);
      b = Math.min(b, sizes.length - (numShards - k));
      bounds.push(b);
    }
    bounds.push(sizes.length);
    return bounds.slice(0, -1).map((b, k) => all.slice(b, bounds[k + 1]));
  }
  if (shardSizeBytes === undefined) return [all];
  if (!(shardSizeBytes > 0)) throw new UserError(`shardSizeBytes must be positive, got ${shardSizeBytes}`);
  const shards: number[][] = [[]];
  let used = 0;
  for (const i of all) {
    const current = shards[shards.length - 1]!;
    if (current.length > 0 && used + sizes[i]! > shardSizeBytes) {
      shards.push([i]);
      used = sizes[i]!;
    } else {
      current.push(i);
      used += sizes[i]!;
    }
  }
  return shards;
}

async function tensorBytes(name: string, t: CheckpointTensorInput): Promise<ArrayBufferView> {
  let data = typeof t.data === 'function' ? await t.data() : t.data;
  if (data instanceof Float32Array && t.dtype !== 'F32') {
    if (!isFloatDtype(t.dtype)) {
      throw new UserError(`tensor "${name}": float32 values cannot be stored as ${t.dtype}`);
    }
    data = encodeFloat32(t.dtype, data);
  }
  const expected = tensorByteLength(t);
  if (data.byteLength !== expected) {
    throw new UserError(
      `tensor "${name}": ${data.byteLength} bytes given, but ${t.dtype} ${JSON.stringify(t.shape)} takes ${expected}`,
    );
  }
  return data;
}

/**
 * Writes a HF checkpoint directory (created if needed). Order: remove config.json, write the weight files,
 * the index, the tokenizer and generation files, then config.json; stale weight files of an earlier layout
 * in the same directory are removed before config.json appears. See the module comment.
 */
export async function writeCheckpoint(dir: string, opts: WriteCheckpointOptions): Promise<WrittenCheckpoint> {
  const config = parseLlamaConfig(opts.config, join(dir, CONFIG_FILE));
  const entries = opts.tensors instanceof Map ? [...opts.tensors] : Object.entries(opts.tensors);
  const specs = new Map(entries.map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape }]));
  validateLlamaTensors(config, specs, dir);
  const sizes = entries.map(([, t]) => tensorByteLength(t));
  const plan = planShards(sizes, opts.shardSizeBytes, opts.numShards);
  const metadata = opts.metadata ?? { format: 'pt' };

  await makeDirs(dir);
  await rm(join(dir, CONFIG_FILE), { force: true });
  const written: string[] = [];
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < plan.length; s++) {
    const file = plan.length === 1 ? SINGLE_WEIGHTS_FILE : shardFileName(s, plan.length);
    const members = plan[s]!.map((i) => entries[i]!);
    const writer = await SafetensorsWriter.create(
      join(dir, file),
      members.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
      metadata,
    );
    try {
      for (const [name, t] of members) {
        await writer.write(name, await tensorBytes(name, t));
        weightMap[name] = file;
      }
    } catch (err) {
      await writer.abort();
      throw err;
    }
    await writer.finish();
    written.push(file);
  }
  const totalSize = sizes.reduce((a, b) => a + b, 0);
  if (plan.length > 1) {
    await writeFileAtomic(
      join(dir, WEIGHTS_INDEX_FILE),
      jsonText({ metadata: { total_size: totalSize }, weight_map: weightMap }),
    );
    written.push(WEIGHTS_INDEX_FILE);
  }
  // Weight files of an earlier layout would shadow or confuse the new one (a single file wins over an index).
  for (const e of await readdir(dir)) {
    const stale = e === SINGLE_WEIGHTS_FILE || e === WEIGHTS_INDEX_FILE || SHARD_FILE.test(e);
    if (stale && !written.includes(e)) await rm(join(dir, e), { force: true });
  }
  const extras: [string, unknown][] = [
    [TOKENIZER_FILE, opts.tokenizerJson],
    [TOKENIZER_CONFIG_FILE, opts.tokenizerConfig],
    [GENERATION_CONFIG_FILE, opts.generationConfig],
  ];
  for (const [file, value] of extras) {
    if (value === undefined) continue;
    await writeFileAtomic(join(dir, file), jsonText(value));
    written.push(file);
  }
  await writeFileAtomic(join(dir, CONFIG_FILE), jsonText(opts.config));
  written.push(CONFIG_FILE);
  return { dir, files: written, totalSize };
}
