/**
 * `moka score`: the log-likelihood of each choice as a continuation of a context, lm-evaluation-harness style
 * (the context with BOS, the choice's tokens being what it adds to the joint encoding). Prints JSON.
 */
import type { Command } from 'commander';
import { UserError } from '../../lib/errors.ts';
import { scoreContinuations } from '../../lib/model/scoring.ts';
import { collect, parseInteger } from './cli-helpers.ts';
import { addModelOptions, loadCommandModel, type ModelCommandOptions } from './model-options.ts';

interface ScoreCommandOptions extends ModelCommandOptions {
  context: string;
  choice: string[];
  batchSize: string;
}

export function registerScore(program: Command): void {
  addModelOptions(
    program
      .command('score')
      .description(
        'print the summed log-probability of each --choice after --context, as JSON ' +
          '{"choices": [{"text", "loglik", "tokens", "isGreedy"}]}',
      ),
  )
    .requiredOption(
      '--context <text>',
      'the context (trailing whitespace moves to the choices, as in lm-eval)',
    )
    .option('--choice <text>', 'a continuation to score, e.g. " Paris" (repeatable)', collect, [])
    .option('--batch-size <n>', 'sequences per run', '8')
    .action(async (opts: ScoreCommandOptions) => {
      if (opts.choice.length === 0) throw new UserError('give at least one --choice to score');
      const batchSize = parseInteger(opts.batchSize, '--batch-size', 1);
      const model = await loadCommandModel(opts);
      try {
        const results = await scoreContinuations(
          model,
          opts.choice.map((continuation) => ({ context: opts.context, continuation })),
          { batchSize },
        );
        const choices = results.map((r, i) => ({
          text: opts.choice[i]!,
          loglik: r.loglik,
          tokens: r.tokens,
          isGreedy: r.isGreedy,
        }));
        process.stdout.write(`${JSON.stringify({ choices }, null, 2)}\n`);
      } finally {
        await model.close();
      }
    });
}
