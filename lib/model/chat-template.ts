/**
 * Chat templates: the Jinja `chat_template` of tokenizer_config.json (or of chat_template.jinja / chat_template.json
 * beside it: see `Checkpoint.tokenizer()`), rendered with @huggingface/jinja exactly as
 * transformers' `apply_chat_template(tokenize=False)` renders it (same variables: messages, bos_token, eos_token,
 * add_generation_prompt; raise_exception and strftime_now are provided by the Jinja runtime).
 */
import { Template } from '@huggingface/jinja';
import { UserError } from '../errors.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface RenderChatOptions {
  /** Append the header that starts the assistant's turn (for generation). Default false, as in transformers. */
  addGenerationPrompt?: boolean;
  /** Further template variables (e.g. `tools`, `date_string`). */
  variables?: Record<string, unknown>;
}

export interface ChatTemplateSpecials {
  bosToken: string | null;
  eosToken: string | null;
}

/**
 * Picks the template source from tokenizer_config.json's `chat_template`: a string, or a list of named templates
 * (newer transformers) of which "default" is used. Returns null when there is none.
 */
export function chatTemplateSource(tokenizerConfig: Record<string, unknown>, source: string): string | null {
  const t = tokenizerConfig.chat_template;
  if (t === undefined || t === null) return null;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t as { name?: unknown; template?: unknown }[];
    const def = named.find((x) => x?.name === 'default');
    if (def && typeof def.template === 'string') return def.template;
    const names = named.map((x) => JSON.stringify(x?.name)).join(', ');
    throw new UserError(`${source}: chat_template lists templates ${names} but none named "default"`);
  }
  throw new UserError(`${source}: chat_template must be a string or a list of {name, template}`);
}

export class ChatTemplate {
  private readonly template: Template;

  constructor(
    readonly source: string,
    private readonly specials: ChatTemplateSpecials,
    /** Where the template came from, for error messages. */
    private readonly origin = 'chat_template',
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      throw new UserError(`${origin}: the chat template does not parse: ${(err as Error).message}`);
    }
  }

  render(messages: readonly ChatMessage[], opts: RenderChatOptions = {}): string {
    for (const [i, m] of messages.entries()) {
      if (typeof m?.role !== 'string' || typeof m?.content !== 'string') {
        throw new UserError(`chat message ${i} must have a string "role" and a string "content"`);
      }
    }
    try {
      return this.template.render({
        ...opts.variables,
        messages: messages.map((m) => ({ ...m })),
        bos_token: this.specials.bosToken ?? '',
        eos_token: this.specials.eosToken ?? '',
        add_generation_prompt: opts.addGenerationPrompt ?? false,
      });
    } catch (err) {
      throw new UserError(`${this.origin}: rendering the chat template failed: ${(err as Error).message}`);
    }
  }
}
