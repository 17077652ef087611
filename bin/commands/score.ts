/**
 * `moka score`: the log-likelihood of each choice as a continuation of a context, lm-evaluation-harness style
 * (`Tokenizer.encodeContextContinuation`: the context with BOS and never EOS, the choice's tokens being exactly
 * what it adds to the joint encoding). Prints JSON with the context's and each choice's token ids (`--json`, or
 * whenever stdout is not a terminal), or a table on a terminal.
 */
import type { Command } from 'commander';
import { UserError } from '../../lib/errors.ts';
import { scoreTokens } from '../../lib/model/scoring.ts';
import { collect, parseInteger } from './cli-helpers.ts';
import { addModelOptions, loadCommandModel, type ModelCommandOptions } from './model-options.ts';

interface ScoreCommandOptions extends ModelCommandOptions {
  context: string;
  choice: string[];
  batchSize: string;
  json?: boolean;
}

export function registerScore(program: Command): void {
  addModelOptions(
    program
      .command('score')
      .description(
        'print the summed log-probability of each --choice after --context (JSON with --json: ' +
          '{"contextIds", "choices": [{"text", "loglik", "tokens", "isGreedy", "continuationIds"}]})',
      ),
  )
    .requiredOption(
      '--context <text>',
      'the context (trailing whitespace moves to the choices, as in lm-eval)',
    )
    .option('--choice <text>', 'a continuation to score, e.g. " Paris" (repeatable)', collect, [])
    .option('--batch-size <n>', 'sequences per run', '8')
    .option('--json', 'print JSON (the default when stdout is not a terminal)')
    .action(async (opts: ScoreCommandOptions) => {
      if (opts.choice.length === 0) throw new UserError('give at least one --choice to score');
      const batchSize = parseInteger(opts.batchSize, '--batch-size', 1);
      const model = await loadCommandModel(opts);
      try {
        const tok = model.tokenizer();
        if (tok.bosNotice) process.stderr.write(`${tok.bosNotice}\n`);
        const encoded = opts.choice.map((choice) => {
          try {
            return tok.encodeContextContinuation(opts.context, choice);
          } catch (err) {
            if (err instanceof UserError) err.message = `--choice ${JSON.stringify(choice)}: ${err.message}`;
            throw err;
          }
        });
        const results = await scoreTokens(model, encoded, { batchSize });
        const choices = results.map((r, i) => ({
          text: opts.choice[i]!,
          loglik: r.loglik,
          tokens: r.tokens,
          isGreedy: r.isGreedy,
          continuationIds: encoded[i]!.continuation,
        }));
        if (opts.json || !process.stdout.isTTY) {
          const out = { contextIds: encoded[0]!.context, choices };
          process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
        } else {
          const width = Math.max(6, ...choices.map((c) => JSON.stringify(c.text).length));
          const rows = choices.map(
            (c) =>
              `${JSON.stringify(c.text).padEnd(width)}  ${c.loglik.toFixed(4).padStart(10)}  ` +
              `${String(c.tokens).padStart(6)}  ${c.isGreedy ? 'yes' : 'no'}`,
          );
          process.stdout.write(
            `${'choice'.padEnd(width)}  ${'loglik'.padStart(10)}  tokens  greedy\n${rows.join('\n')}\n`,
          );
        }
      } finally {
        await model.close();
      }
    });
}
