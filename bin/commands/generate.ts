/** `moka generate`: continue a prompt with a model (greedy by default, or sampled), printing the continuation. */
import type { Command } from 'commander';
import { generateText } from '../../lib/model/generation.ts';
import { collect, parseInteger, parseNumber } from './cli-helpers.ts';
import { addModelOptions, loadCommandModel, type ModelCommandOptions } from './model-options.ts';

interface GenerateCommandOptions extends ModelCommandOptions {
  prompt: string;
  maxNewTokens: string;
  temperature: string;
  topK?: string;
  topP?: string;
  seed: string;
  stop: string[];
  chat?: boolean;
  system?: string;
  json?: boolean;
}

export function registerGenerate(program: Command): void {
  addModelOptions(
    program
      .command('generate')
      .description(
        'generate a continuation of a prompt (key/value-cached decoding; greedy unless --temperature > 0)',
      ),
  )
    .requiredOption(
      '--prompt <text>',
      'the prompt (the tokenizer adds BOS, never EOS; with --chat, the user message)',
    )
    .option('--max-new-tokens <n>', 'most tokens to generate', '64')
    .option('--temperature <t>', 'sampling temperature; 0 decodes greedily', '0')
    .option('--top-k <k>', 'sample from the k most likely tokens only (default 50, as transformers; 0: all)')
    .option('--top-p <p>', 'sample from the smallest set of tokens whose probability reaches p')
    .option('--seed <n>', 'seed of the sampler', '0')
    .option('--stop <text>', 'stop when the continuation contains this text (repeatable)', collect, [])
    .option('--chat', "render the prompt with the checkpoint's chat template")
    .option('--system <text>', 'a system message before the prompt (with --chat)')
    .option('--json', 'print {"text", "tokens", "stopReason"} instead of the text')
    .action(async (opts: GenerateCommandOptions) => {
      const genOpts = {
        maxNewTokens: parseInteger(opts.maxNewTokens, '--max-new-tokens', 0),
        temperature: parseNumber(opts.temperature, '--temperature'),
        topK: opts.topK === undefined ? undefined : parseInteger(opts.topK, '--top-k', 0),
        topP: opts.topP === undefined ? undefined : parseNumber(opts.topP, '--top-p'),
        seed: parseInteger(opts.seed, '--seed', 0),
        stopStrings: opts.stop,
        chat: opts.chat ?? false,
        system: opts.system,
      };
      const model = await loadCommandModel(opts);
      try {
        const notice = model.tokenizer().bosNotice;
        if (notice && !genOpts.chat) process.stderr.write(`${notice}\n`);
        const result = await generateText(model, opts.prompt, genOpts);
        if (opts.json) {
          const { text, tokens, stopReason } = result;
          process.stdout.write(`${JSON.stringify({ text, tokens, stopReason })}\n`);
        } else {
          process.stdout.write(`${result.text}\n`);
        }
      } finally {
        await model.close();
      }
    });
}
