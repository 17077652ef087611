/**
 * The tokenizer of a checkpoint: tokenizer.json (+ tokenizer_config.json) run by @huggingface/tokenizers, with
 * the special-token policy made explicit.
 *
 * BOS/EOS: what `encode(text, {addSpecialTokens: true})` adds is what the tokenizer.json post-processor adds
 * (probed once at load), overridden by `add_bos_token` / `add_eos_token` in tokenizer_config.json when those are
 * set (as transformers' LlamaTokenizerFast does). When the text already starts with the BOS token (a rendered chat
 * template that emits `{{ bos_token }}`), no second BOS is added: a double BOS silently changes a model's outputs.
 *
 * Scoring follows lm-evaluation-harness (`encodeContextContinuation`): the context is encoded with the
 * checkpoint's BOS handling and the continuation's tokens are those the joint encoding adds, so they never carry
 * special tokens.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors.ts';
import {
  ChatTemplate,
  chatTemplateSource,
  type ChatMessage,
  type RenderChatOptions,
} from './chat-template.ts';

export interface TokenizerLoadOptions {
  /** Names the tokenizer file in error messages. */
  source?: string;
  /** More end-of-sequence ids (from config.json / generation_config.json). */
  extraEosIds?: number[];
  /** Where the chat_template of tokenizerConfig came from, for error messages (default: tokenizer_config.json). */
  chatTemplateOrigin?: string;
}

export interface EncodeOptions {
  /** Add the checkpoint's special tokens (BOS for LLaMA). Default true, as in transformers. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** Default: tokenizer_config.json's clean_up_tokenization_spaces (true when absent, as in transformers). */
  cleanUpTokenizationSpaces?: boolean;
}

/** A special token in tokenizer_config.json: a string, or an AddedToken object `{content, ...}`. */
function specialTokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

function startsWith(ids: readonly number[], prefix: readonly number[]): boolean {
  return prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);
}

export class Tokenizer {
  readonly bosToken: string | null;
  readonly bosId: number | null;
  readonly eosToken: string | null;
  /** The primary EOS id (tokenizer_config.json's eos_token), or null. */
  readonly eosId: number | null;
  /** Every id that ends a generation: eos_token plus any from config.json / generation_config.json. */
  readonly eosIds: number[];
  readonly padId: number | null;
  /** Number of ids the tokenizer can produce (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  /** Special tokens `encode(..., {addSpecialTokens: true})` puts before and after the text. */
  readonly prefixIds: number[];
  readonly suffixIds: number[];
  readonly chatTemplate: ChatTemplate | null;

  private constructor(
    private readonly hf: HfTokenizer,
    config: Record<string, unknown>,
    opts: TokenizerLoadOptions,
  ) {
    const source = opts.source ?? 'tokenizer.json';
    const idOf = (token: string | null, field: string): number | null => {
      if (token === null) return null;
      const id = hf.token_to_id(token);
      if (id === undefined) {
        throw new UserError(
          `${source}: tokenizer_config.json's ${field} "${token}" is not in the vocabulary`,
        );
      }
      return id;
    };

    // What the post-processor adds around a text: compare one encoding with and without special tokens.
    const probe = 'a';
    const plain: number[] = hf.encode(probe, { add_special_tokens: false }).ids;
    const full: number[] = hf.encode(probe, { add_special_tokens: true }).ids;
    let at = -1;
    for (let k = 0; k + plain.length <= full.length; k++) {
      if (plain.every((id, i) => full[k + i] === id)) {
        at = k;
        break;
      }
    }
    const templatePrefix = at >= 0 ? full.slice(0, at) : [];
    const templateSuffix = at >= 0 ? full.slice(at + plain.length) : [];

    this.bosToken =
      specialTokenText(config.bos_token) ??
      (templatePrefix.length > 0 ? (hf.id_to_token(templatePrefix[0]!) ?? null) : null);
    this.bosId = idOf(this.bosToken, 'bos_token');
    this.eosToken = specialTokenText(config.eos_token);
    this.eosId = idOf(this.eosToken, 'eos_token');
    this.padId = idOf(specialTokenText(config.pad_token), 'pad_token');

    let prefix = templatePrefix;
    let suffix = templateSuffix;
    if (config.add_bos_token === false) prefix = prefix.filter((id) => id !== this.bosId);
    if (config.add_bos_token === true && this.bosId !== null && !prefix.includes(this.bosId)) {
      prefix = [this.bosId, ...prefix];
    }
    if (config.add_eos_token === false) suffix = suffix.filter((id) => id !== this.eosId);
    if (config.add_eos_token === true && this.eosId !== null && !suffix.includes(this.eosId)) {
      suffix = [...suffix, this.eosId];
    }
    this.prefixIds = prefix;
    this.suffixIds = suffix;

    const eos = new Set<number>();
    if (this.eosId !== null) eos.add(this.eosId);
    for (const id of opts.extraEosIds ?? []) eos.add(id);
    this.eosIds = [...eos];

    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const templateOrigin = opts.chatTemplateOrigin ?? `${source} (tokenizer_config.json)`;
    const templateText = chatTemplateSource(config, templateOrigin);
    this.chatTemplate =
      templateText === null
        ? null
        : new ChatTemplate(
            templateText,
            { bosToken: this.bosToken, eosToken: this.eosToken },
            `${templateOrigin} chat_template`,
          );
  }

  /** Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json objects. */
  static fromJson(
    tokenizerJson: unknown,
    tokenizerConfig: Record<string, unknown> = {},
    opts: TokenizerLoadOptions = {},
  ): Tokenizer {
    const source = opts.source ?? 'tokenizer.json';
    if (tokenizerJson === null || typeof tokenizerJson !== 'object' || Array.isArray(tokenizerJson)) {
      throw new UserError(`${source}: not a tokenizer.json object`);
    }
    const json = tokenizerJson as Record<string, unknown>;
    if (!json.model || typeof json.model !== 'object') {
      throw new UserError(`${source}: no "model" section; is this a Hugging Face fast-tokenizer file?`);
    }
    // tokenizers.js expects every section key to be present (null when unused), as the Rust library writes them.
    const normalized = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      added_tokens: [],
      ...json,
    };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(normalized, tokenizerConfig);
    } catch (err) {
      throw new UserError(`${source}: cannot load the tokenizer: ${(err as Error).message}`);
    }
    return new Tokenizer(hf, tokenizerConfig, opts);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** Token ids of `text`; see the module comment for the special-token policy. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (opts.addSpecialTokens === false) return ids;
    const prefix = this.prefixIds.length > 0 && startsWith(ids, this.prefixIds) ? [] : this.prefixIds;
    return [...prefix, ...ids, ...this.suffixIds];
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new UserError(
          `token id ${id} is outside the tokenizer's vocabulary [0, ${this.vocabSize}); decode only ids this ` +
            "tokenizer produces (a model whose vocab_size is larger than the tokenizer's has rows no token uses)",
        );
      }
    }
    return this.hf.decode([...ids], {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      ...(opts.cleanUpTokenizationSpaces === undefined
        ? {}
        : { clean_up_tokenization_spaces: opts.cleanUpTokenizationSpaces }),
    });
  }

  /**
   * lm-evaluation-harness `_encode_pair`: trailing whitespace of the context moves to the continuation; the
   * continuation's tokens are `encode(context + continuation)` after the tokens of `encode(context)`. An empty
   * context becomes the BOS token alone (EOS when there is no BOS), with the continuation encoded plainly.
   */
  encodeContextContinuation(
    context: string,
    continuation: string,
  ): { context: number[]; continuation: number[] } {
    if (context === '') {
      const start = this.bosId ?? this.eosId;
      if (start === null)
        throw new UserError('an empty context needs a BOS or EOS token, and this tokenizer has none');
      return { context: [start], continuation: this.encode(continuation, { addSpecialTokens: false }) };
    }
    const trimmed = context.trimEnd();
    const spaces = context.slice(trimmed.length);
    const whole = this.encode(trimmed + spaces + continuation);
    const contextIds = this.encode(trimmed);
    return { context: contextIds, continuation: whole.slice(contextIds.length) };
  }

  /** The chat rendered with the checkpoint's chat template. */
  renderChat(messages: readonly ChatMessage[], opts: RenderChatOptions = {}): string {
    if (!this.chatTemplate) {
      throw new UserError(
        'this tokenizer has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); ' +
          'use a plain prompt format instead',
      );
    }
    return this.chatTemplate.render(messages, opts);
  }

  /**
   * Token ids of a rendered chat. Like transformers' apply_chat_template(tokenize=True), special tokens come from
   * the template only (nothing is added around it), so a template that emits BOS yields exactly one.
   */
  encodeChat(messages: readonly ChatMessage[], opts: RenderChatOptions = {}): number[] {
    return this.encode(this.renderChat(messages, opts), { addSpecialTokens: false });
  }
}
