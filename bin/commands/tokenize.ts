/**
 * `moka tokenize`: the token ids a model's tokenizer gives a text, with each token's vocabulary piece and text and
 * the special tokens marked; with `--chat`, the text as a user message rendered with the chat template (and the
 * generation prompt), which is what `moka generate --chat` feeds the model. Reads only the tokenizer files.
 */
import type { Command } from 'commander';
import { UserError } from '../../lib/errors.ts';
import { openTokenizer } from '../../lib/model/checkpoint.ts';
import type { ChatMessage } from '../../lib/model/chat-template.ts';
import type { TokenPiece } from '../../lib/model/tokenizer.ts';

interface TokenizeCommandOptions {
  model: string;
  text: string;
  chat?: boolean;
  system?: string;
  json?: boolean;
}

/** One line per token: id, special marker, the vocabulary piece and the decoded text (both JSON-quoted). */
function tokenTable(pieces: readonly TokenPiece[]): string {
  const width = Math.max(2, ...pieces.map((p) => String(p.id).length));
  return pieces
    .map(
      (p) =>
        `${String(p.id).padStart(width)}  ${p.special ? 'special' : '       '}  ${JSON.stringify(p.piece)}` +
        (p.piece === p.text ? '' : `  → ${JSON.stringify(p.text)}`),
    )
    .join('\n');
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description("show the token ids, pieces and special tokens a model's tokenizer gives a text")
    .requiredOption('--model <dir>', 'model directory holding tokenizer.json (and tokenizer_config.json)')
    .requiredOption('--text <text>', 'the text (with --chat, the user message)')
    .option('--chat', 'render the text as a user message with the chat template and the generation prompt')
    .option('--system <text>', 'a system message before the user message (with --chat)')
    .option('--json', 'print {"text", "ids", "tokens": [{"id", "piece", "text", "special"}]}')
    .action(async (opts: TokenizeCommandOptions) => {
      if (opts.system !== undefined && !opts.chat) throw new UserError('--system needs --chat');
      const tok = await openTokenizer(opts.model);
      if (tok.bosNotice) process.stderr.write(`${tok.bosNotice}\n`);
      let text = opts.text;
      let ids: number[];
      if (opts.chat) {
        const messages: ChatMessage[] = [];
        if (opts.system !== undefined) messages.push({ role: 'system', content: opts.system });
        messages.push({ role: 'user', content: opts.text });
        text = tok.renderChat(messages, { addGenerationPrompt: true });
        ids = tok.encodeChat(messages, { addGenerationPrompt: true });
      } else {
        // What `moka generate --prompt` and a scoring context feed the model: BOS, never EOS.
        ids = tok.encodePrompt(text);
      }
      const pieces = tok.pieces(ids);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ text, ids, tokens: pieces })}\n`);
        return;
      }
      const specials = pieces.filter((p) => p.special).length;
      process.stdout.write(
        `${ids.length} tokens (${specials} special)${opts.chat ? ` for ${JSON.stringify(text)}` : ''}\n` +
          `ids: ${JSON.stringify(ids)}\n${tokenTable(pieces)}\n`,
      );
    });
}
