/**
 * The `moka` command line. Each subcommand lives in `bin/commands/<name>.ts` and exports `register`.
 * Errors caused by the user print one line and exit 1; usage errors exit 2 (commander's convention). Filesystem
 * errors (no space, no permission, a file in the way, …) are the user's to fix too: one line naming the path.
 * Whatever a failed command left half-written is removed before the process exits (lib/output-cleanup.ts).
 */
import { Command, CommanderError } from 'commander';
import { isUserError, userErrorFromFs } from '../lib/errors.ts';
import { runCleanups } from '../lib/output-cleanup.ts';
import { registerCommands } from './commands/index.ts';

export function buildProgram(): Command {
  const program = new Command('moka')
    .description(
      'Fine-tune 4-bit quantized LLaMA-family models with Mixture of Kronecker Adapters (MoKA, MoKAs) and ' +
        'LoRA, DoRA, KronA baselines, on ONNX Runtime: quantize a Hugging Face checkpoint, train an adapter, ' +
        'evaluate it on lm-evaluation-harness tasks and report, generate, score, merge or export it.',
    )
    .addHelpText(
      'after',
      '\nTry it on a tiny random model (it generates gibberish; give --model a real Hugging Face LLaMA-family\n' +
        'directory for real text):\n' +
        '  moka init-tiny --out scratch/tiny\n' +
        '  moka train --model scratch/tiny --data examples/data/tiny-instructions.jsonl --out scratch/run\n' +
        'Each command has --help.',
    )
    .version('0.1.0')
    .showSuggestionAfterError(true)
    .exitOverride();
  registerCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    runCleanups();
    if (err instanceof CommanderError) {
      // commander already printed the message (or the help text).
      return err.exitCode === 0 ? 0 : 2;
    }
    if (isUserError(err)) {
      process.stderr.write(`moka: error: ${err.message}\n`);
      return 1;
    }
    const fsError = userErrorFromFs(err);
    if (fsError) {
      process.stderr.write(`moka: error: ${fsError.message}\n`);
      if (process.env.MOKA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
      return 1;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`moka: internal error: ${message}\n`);
    if (process.env.MOKA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    else process.stderr.write('moka: set MOKA_DEBUG=1 to print the stack trace, and please report this.\n');
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
