/**
 * Chat templates: the Jinja `chat_template` of tokenizer_config.json (or of chat_template.jinja / chat_template.json
 * beside it: see `Checkpoint.tokenizer()`), rendered with @huggingface/jinja exactly as
 * transformers' `apply_chat_template(tokenize=False)` renders it (same variables: messages, bos_token, eos_token,
 * add_generation_prompt; raise_exception from the Jinja runtime; strftime_now as transformers defines it).
 *
 * `strftime_now(format)` (Llama 3.2 renders "Today Date: 30 Nov 2026" with it) formats a wall clock that the caller
 * can pin (`RenderChatOptions.clock`): a training run pins it at its start, so the tokens of its data, and hence
 * its identity, do not change with the day it is resumed on.
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
  /** The local wall-clock time `strftime_now` formats, as "YYYY-MM-DDTHH:MM:SS" (default: now; see wallClockNow). */
  clock?: string;
  /** Further template variables (e.g. `tools`, `date_string`). */
  variables?: Record<string, unknown>;
}

const WALL_CLOCK = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$/;
const MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
];
const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/** The local wall-clock time, "YYYY-MM-DDTHH:MM:SS": what transformers' `strftime_now` (datetime.now()) sees. */
export function wallClockNow(date = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return (
    `${p(date.getFullYear(), 4)}-${p(date.getMonth() + 1)}-${p(date.getDate())}` +
    `T${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`
  );
}

/** Throws UserError unless `clock` is a "YYYY-MM-DDTHH:MM:SS" wall-clock time. */
export function parseWallClock(clock: string, what = 'clock'): Date {
  const m = WALL_CLOCK.exec(clock);
  const d = m && new Date(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  if (!m || !d || wallClockNow(d) !== clock) {
    throw new UserError(`${what} must be a local time "YYYY-MM-DDTHH:MM:SS", got ${JSON.stringify(clock)}`);
  }
  return d;
}

/**
 * Python's `datetime.strftime` in the C locale (English names), for the directives chat templates use:
 * %Y %y %m %d %e %j %H %I %M %S %p %b %B %h %a %A %%; other directives are left as written.
 */
export function strftime(clock: string, format: string): string {
  const d = parseWallClock(clock);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const dayOfYear =
    Math.round(
      (Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) - Date.UTC(d.getFullYear(), 0, 1)) / 864e5,
    ) + 1;
  const h12 = d.getHours() % 12 === 0 ? 12 : d.getHours() % 12;
  const values: Record<string, string> = {
    Y: String(d.getFullYear()),
    y: p(d.getFullYear() % 100),
    m: p(d.getMonth() + 1),
    d: p(d.getDate()),
    e: String(d.getDate()).padStart(2, ' '),
    j: p(dayOfYear, 3),
    H: p(d.getHours()),
    I: p(h12),
    M: p(d.getMinutes()),
    S: p(d.getSeconds()),
    p: d.getHours() < 12 ? 'AM' : 'PM',
    b: MONTHS[d.getMonth()]!.slice(0, 3),
    h: MONTHS[d.getMonth()]!.slice(0, 3),
    B: MONTHS[d.getMonth()]!,
    a: WEEKDAYS[d.getDay()]!.slice(0, 3),
    A: WEEKDAYS[d.getDay()]!,
    '%': '%',
  };
  return format.replace(/%(.)/g, (all, c: string) => values[c] ?? all);
}

/** The name templates' `strftime_now` is renamed to (see ChatTemplate's constructor). */
const PINNED_STRFTIME = 'moka_strftime_now';

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
      // The runtime declares its own strftime_now (the machine's clock, its locale's month names) and refuses a
      // second declaration, so the template calls ours under another name.
      this.template = new Template(source.replace(/\bstrftime_now\b/g, PINNED_STRFTIME));
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
    const clock = opts.clock ?? wallClockNow();
    if (opts.clock !== undefined) parseWallClock(clock, 'the chat template clock');
    try {
      return this.template.render({
        [PINNED_STRFTIME]: (format: unknown) => strftime(clock, String(format)),
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
