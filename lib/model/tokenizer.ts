/**
 * The tokenizer of a checkpoint: tokenizer.json (+ tokenizer_config.json) run by @huggingface/tokenizers, with
 * the special-token policy made explicit.
 *
 * BOS/EOS: what `encode(text, {addSpecialTokens: true})` adds is what the tokenizer.json post-processor adds
 * (probed once at load), overridden by `add_bos_token` / `add_eos_token` in tokenizer_config.json when those are
 * set (as transformers' LlamaTokenizerFast does). When the text already starts with the BOS token (a rendered chat
 * template that emits `{{ bos_token }}`), no second BOS is added: a double BOS silently changes a model's outputs.
 *
 * What the post-processor adds AFTER a text (EOS with `add_eos_token`, or a template's suffix) belongs to a
 * complete sequence only: `encodePrompt` and `encodeContextContinuation` (the inputs of generation and scoring)
 * never carry it, so a generated or scored continuation follows the text itself, not an end-of-sequence token.
 *
 * Decoding defaults are those of current transformers (>= 4.45; checked against v5): special tokens are kept
 * unless `skipSpecialTokens`, and `clean_up_tokenization_spaces` is false unless tokenizer_config.json sets it
 * (transformers PR #31938 changed the unset default from true to false; tokenizers.js still defaults to true, so
 * the flag is always passed explicitly). docs/model.md lists every default and its source.
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
  /** Leave out special tokens (added tokens marked `special`). Default false, as in transformers. */
  skipSpecialTokens?: boolean;
  /**
   * Remove spaces before punctuation and in English contractions (" ," → ","; " 's" → "'s"). Default:
   * tokenizer_config.json's clean_up_tokenization_spaces, false when absent (current transformers).
   */
  cleanUpTokenizationSpaces?: boolean;
}

/** One token of `Tokenizer.pieces`: its id, its vocabulary string, the text it decodes to alone, and whether it is special. */
export interface TokenPiece {
  id: number;
  /** The token's string in the vocabulary (byte-level `Ġ`/SentencePiece `▁` forms included). */
  piece: string;
  /** The token decoded on its own (special tokens as their text; a partial UTF-8 character as U+FFFD). */
  text: string;
  /** An added token marked special (BOS, EOS, chat-template markers): what `skipSpecialTokens` leaves out. */
  special: boolean;
}

/**
 * The context ends inside a token of the joint encoding: the continuation's first characters merge with the
 * context's last ones (`"… th" + "e"` → `" the"`), so no token sequence is exactly the continuation. Holds a
 * suggestion that moves the boundary to the start of the merged token.
 */
export class ContinuationMergedError extends UserError {
  constructor(
    message: string,
    /** The context and continuation with the boundary at the start of the merged token, when one was found. */
    readonly suggestion: { context: string; continuation: string } | null,
  ) {
    super(message); // name stays 'UserError': the CLI prints it as one line
  }
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
  /** Special added tokens (id → text): what `skipSpecialTokens` drops, and what stop strings may name. */
  readonly specialTokens: ReadonlyMap<number, string>;
  /** tokenizer_config.json's clean_up_tokenization_spaces; false when absent (current transformers). */
  readonly cleanUpTokenizationSpaces: boolean;
  /**
   * A one-line notice when tokenizer_config.json names a bos_token that encoding does not add (the first Llama 3
   * release: its post-processor is ByteLevel only), else null. Scoring and generation then run without BOS, as
   * lm-evaluation-harness and transformers do with these files.
   */
  readonly bosNotice: string | null;

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
    this.cleanUpTokenizationSpaces = config.clean_up_tokenization_spaces === true;
    const specials = new Map<number, string>();
    for (const t of hf.get_added_tokens_decoder().values()) if (t.special) specials.set(t.id, t.content);
    this.specialTokens = specials;
    this.bosNotice =
      this.bosId !== null &&
      specialTokenText(config.bos_token) !== null &&
      config.add_bos_token === undefined &&
      !prefix.includes(this.bosId)
        ? `notice: ${source}: tokenizer_config.json names bos_token ${JSON.stringify(this.bosToken)}, but ` +
          'encoding adds none (no add_bos_token, and the post-processor adds no BOS), so prompts and scored ' +
          'contexts start without it, as in lm-evaluation-harness and transformers; set "add_bos_token": true ' +
          'in tokenizer_config.json if the model was trained with BOS'
        : null;

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

  /**
   * The token ids of a prompt to continue (generation) or of a scoring context: the checkpoint's prefix (BOS),
   * unless the text already starts with it, then the text's tokens, and never the post-processor's suffix (an
   * EOS there would tell the model the text is over).
   */
  encodePrompt(text: string): number[] {
    return this.withPrefix(this.encode(text, { addSpecialTokens: false }));
  }

  private withPrefix(ids: number[]): number[] {
    return startsWith(ids, this.prefixIds) ? ids : [...this.prefixIds, ...ids];
  }

  /** Each token of `ids` with its vocabulary string, its text and whether it is special (`moka tokenize`). */
  pieces(ids: readonly number[]): TokenPiece[] {
    return ids.map((id) => ({
      id,
      piece: this.hf.id_to_token(id) ?? '',
      text: this.decode([id]),
      special: this.specialTokens.has(id),
    }));
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
      clean_up_tokenization_spaces: opts.cleanUpTokenizationSpaces ?? this.cleanUpTokenizationSpaces,
    });
  }

  /**
   * The single entry point for scoring text (`moka score`, lib/eval): lm-evaluation-harness `_encode_pair`, made
   * exact for every special-token policy. Contract:
   *
   * - Trailing whitespace of the context moves to the front of the continuation (lm-eval).
   * - `continuation` is exactly the tokens the continuation text adds to the joint encoding: with
   *   enc = the text's own tokens (no special tokens added), `enc(context + continuation)` minus the leading
   *   `enc(context)`. Special tokens the text itself contains are kept (`"Paris<|eot_id|>"` scores the
   *   `<|eot_id|>` token); nothing the post-processor adds (BOS, EOS, a template's prefix or suffix) is ever in
   *   it, so no added token is scored.
   * - `context` is what the model reads before the continuation, as lm-eval feeds it: the post-processor's
   *   prefix (BOS) unless the text already starts with it (a rendered chat template), then enc(context); never
   *   the suffix (with `add_eos_token`, lm-eval's own split would put EOS between context and continuation).
   *   An empty context is the BOS token alone (EOS when there is no BOS), as lm-eval's `prefix_token_id`.
   *
   * Throws ContinuationMergedError (a UserError) when the joint encoding does not start with enc(context): the
   * boundary falls inside a token (`"The sky is th" + "e"`), so no token sequence is the continuation; the message
   * says which token absorbed it and where to move the boundary. Throws UserError when the continuation is empty.
   */
  encodeContextContinuation(
    context: string,
    continuation: string,
  ): { context: number[]; continuation: number[] } {
    const trimmed = context.trimEnd();
    const moved = context.slice(trimmed.length) + continuation;
    if (moved === '') throw new UserError('the continuation is empty; there is nothing to score');
    const plain = (text: string) => this.encode(text, { addSpecialTokens: false });
    const contextIds = plain(trimmed);
    const joint = plain(trimmed + moved);
    let same = 0;
    while (same < contextIds.length && joint[same] === contextIds[same]) same++;
    if (same < contextIds.length) throw this.mergedError(trimmed, moved, joint, same);
    const continuationIds = joint.slice(contextIds.length);
    let start = this.withPrefix(contextIds);
    if (start.length === 0) {
      const id = this.bosId ?? this.eosId;
      if (id === null)
        throw new UserError('an empty context needs a BOS or EOS token, and this tokenizer has none');
      start = [id];
    }
    return { context: start, continuation: continuationIds };
  }

  private mergedError(
    context: string,
    continuation: string,
    joint: readonly number[],
    same: number,
  ): ContinuationMergedError {
    // The joint tokens up to the first that differs decode to a prefix of the context: the boundary goes there.
    const before = this.decode(joint.slice(0, same));
    const ok = same > 0 && context.startsWith(before) && before.length < context.length;
    const suggestion = ok
      ? { context: before.trimEnd(), continuation: context.slice(before.trimEnd().length) + continuation }
      : null;
    const merged = this.decode(joint.slice(same, same + 1));
    const where =
      suggestion === null
        ? 'move the boundary to a token boundary'
        : `move the boundary to the start of that token: context ${JSON.stringify(suggestion.context)}, ` +
          `continuation ${JSON.stringify(suggestion.continuation)}`;
    return new ContinuationMergedError(
      `the continuation ${JSON.stringify(continuation)} merges into the context's last token: ` +
        `${JSON.stringify(context.length > 32 ? `…${context.slice(-31)}` : context)} + ` +
        `${JSON.stringify(continuation.length > 32 ? `${continuation.slice(0, 31)}…` : continuation)} encode as ` +
        `${JSON.stringify(merged)}, so the boundary falls inside a token and no tokens are exactly the ` +
        `continuation; ${where} (lm-evaluation-harness tasks start each continuation with a space)`,
      suggestion,
    );
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
