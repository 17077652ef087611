/**
 * A small but real tokenizer for generated test checkpoints, built like Llama 3's: byte-level BPE (every byte is a
 * token, so any UTF-8 text encodes and decodes back exactly), the Llama 3 split regex, merges learned from a fixed
 * English text, and the Llama 3 special tokens with a Llama 3 style chat template. Deterministic: the same
 * options give byte-identical tokenizer.json and tokenizer_config.json files.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

/** Llama 3's pre-tokenizer regex (Oniguruma syntax, as stored in its tokenizer.json). */
const LLAMA3_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const TINY_SPECIAL_TOKENS = [
  '<|begin_of_text|>',
  '<|end_of_text|>',
  '<|start_header_id|>',
  '<|end_header_id|>',
  '<|eot_id|>',
] as const;

/** The Llama 3 instruct template, without its system-date preamble. */
export const TINY_CHAT_TEMPLATE =
  "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + " +
  "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}" +
  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/** The text the merges are learned from: plain English with digits and punctuation, fixed forever. */
const TRAINING_TEXT = `The quick brown fox jumps over the lazy dog. A tiny model is still a model: it has an embedding,
a stack of decoder layers, a final norm and a head that turns hidden states into logits over the vocabulary.
Each layer normalizes its input, attends to the tokens before it, adds the result back, normalizes again and
runs a gated feed-forward network. The attention uses rotary position embeddings, so the model knows where
every token is without learning a table of positions. When the number of key and value heads is smaller than
the number of query heads, several query heads share one key and value head; this is grouped-query attention.
Question: What is the capital of France?
Answer: The capital of France is Paris.
Question: How many legs does a spider have?
Answer: A spider has eight legs, while an insect has six.
Please choose the correct answer to the question: Which of these is a mammal? Answer1: shark Answer2: whale
Answer3: trout. The correct answer is answer2, because a whale breathes air and feeds its young with milk.
Below is an instruction that describes a task. Write a response that appropriately completes the request.
### Instruction: Write a short sentence about the weather today.
### Response: It is sunny and warm, with a light wind from the west and no rain in the forecast.
In 2024 there were 365 days in most calendars, but 2024 was a leap year and had 366; the year 2023 had 365.
Numbers like 3.14159, 2.71828 and 1.41421 appear in mathematics, physics and engineering all the time.
She said, "I'll be there at 10:30," and he replied, "We're going to be late if we don't leave now!"
Training a model means showing it many examples, measuring how wrong its predictions are, and changing its
weights a little in the direction that makes them less wrong. Fine-tuning starts from a model that already
knows a lot and teaches it something new with far fewer examples and far less computation.
An adapter is a small set of extra weights added next to a frozen layer. Only the adapter is trained, so the
memory needed for gradients and optimizer state is tiny compared with the model itself. A Kronecker adapter
builds its update from the Kronecker product of two small matrices; a mixture of such adapters adds several
of them, each with its own gate, so that the update can be rich while the number of parameters stays small.
Quantization stores each weight in four bits instead of sixteen, with a scale for every block of weights.
The model is evaluated on tasks such as reading comprehension, common sense reasoning and arithmetic, and
the results are written to a report with tables and charts that compare the methods side by side.
`;

/** GPT-2's byte → printable character map, used by every byte-level BPE (Llama 3 included). */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  }
  return map;
}

export interface TinyTokenizerOptions {
  /** Total tokens including the 256 byte tokens and the specials (default 512). At least 256 + specials. */
  size?: number;
  /** model_max_length in tokenizer_config.json (default 2048). */
  modelMaxLength?: number;
}

export interface TinyTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Number of ids (largest id + 1). */
  size: number;
  bosId: number;
  eosId: number;
  eotId: number;
}

function tokenizerJsonOf(
  vocab: Record<string, number>,
  merges: string[],
  specialIds: Record<string, number>,
): Record<string, unknown> {
  const bos = TINY_SPECIAL_TOKENS[0];
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: TINY_SPECIAL_TOKENS.map((content) => specialToken(specialIds[content]!, content)),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bos, type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: bos, type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { [bos]: { id: bos, ids: [specialIds[bos]], tokens: [bos] } },
        },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges,
    },
  };
}

/**
 * Learns `count` merges from the training text: repeatedly merge the most frequent adjacent pair (ties broken by
 * the pair's text, so the result is deterministic), within the pre-tokenized words only.
 */
function learnMerges(words: Map<string, number>, count: number): [string, string][] {
  const entries = [...words].map(([w, n]) => ({ symbols: Array.from(w), n }));
  const merges: [string, string][] = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { symbols, n } of entries) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | null = null;
    let bestCount = 1; // a pair seen once teaches nothing
    for (const [key, n] of pairs) {
      if (n > bestCount || (n === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (best === null) break;
    const [a, b] = best.split(' ') as [string, string];
    merges.push([a, b]);
    for (const e of entries) {
      const out: string[] = [];
      for (let i = 0; i < e.symbols.length; i++) {
        if (i + 1 < e.symbols.length && e.symbols[i] === a && e.symbols[i + 1] === b) {
          out.push(a + b);
          i++;
        } else {
          out.push(e.symbols[i]!);
        }
      }
      e.symbols = out;
    }
  }
  return merges;
}

/** Builds the tiny tokenizer's files; see the module comment. */
export function buildTinyTokenizer(opts: TinyTokenizerOptions = {}): TinyTokenizerFiles {
  const size = opts.size ?? 512;
  const minSize = 256 + TINY_SPECIAL_TOKENS.length;
  if (!Number.isInteger(size) || size < minSize) {
    throw new RangeError(
      `tiny tokenizer size must be an integer >= ${minSize} (256 bytes + specials), got ${size}`,
    );
  }
  const byteChars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  byteChars.forEach((c, b) => (vocab[c] = b));

  // Pre-tokenize the training text with the tokenizer's own pre-tokenizer, so merges fit how text is split.
  const skeleton = new HfTokenizer(tokenizerJsonOf(vocab, [], {}), {});
  const words = new Map<string, number>();
  for (const w of skeleton.pre_tokenizer!.pre_tokenize(TRAINING_TEXT)) words.set(w, (words.get(w) ?? 0) + 1);

  const mergeBudget = size - minSize;
  const merges: string[] = [];
  for (const [a, b] of learnMerges(words, mergeBudget)) {
    // Two merge paths can build the same string; it is one token.
    if (!Object.hasOwn(vocab, a + b)) vocab[a + b] = Object.keys(vocab).length;
    merges.push(`${a} ${b}`);
  }
  const specialIds: Record<string, number> = {};
  let next = Object.keys(vocab).length;
  for (const t of TINY_SPECIAL_TOKENS) specialIds[t] = next++;
  // A short training text may run out of pairs before the budget: pad with reserved specials as Llama 3 does,
  // so the size is exactly what was asked for.
  const reserved: string[] = [];
  while (next < size) reserved.push(`<|reserved_special_token_${next++ - minSize}|>`);
  const tokenizerJson = tokenizerJsonOf(vocab, merges, specialIds);
  if (reserved.length > 0) {
    const added = tokenizerJson.added_tokens as Record<string, unknown>[];
    reserved.forEach((content, i) =>
      added.push(specialToken(Object.keys(vocab).length + TINY_SPECIAL_TOKENS.length + i, content)),
    );
  }
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const t of tokenizerJson.added_tokens as { id: number; content: string }[]) {
    addedTokensDecoder[String(t.id)] = {
      content: t.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    };
  }
  const tokenizerConfig: Record<string, unknown> = {
    added_tokens_decoder: addedTokensDecoder,
    bos_token: TINY_SPECIAL_TOKENS[0],
    eos_token: TINY_SPECIAL_TOKENS[1],
    chat_template: TINY_CHAT_TEMPLATE,
    // Byte-level decoding is exact; the transformers "clean up" pass would turn " ." into "." and break that.
    clean_up_tokenization_spaces: false,
    model_input_names: ['input_ids', 'attention_mask'],
    model_max_length: opts.modelMaxLength ?? 2048,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return {
    tokenizerJson,
    tokenizerConfig,
    size,
    bosId: specialIds['<|begin_of_text|>']!,
    eosId: specialIds['<|end_of_text|>']!,
    eotId: specialIds['<|eot_id|>']!,
  };
}

/** An `added_tokens` entry of tokenizer.json for a special token. */
function specialToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}
