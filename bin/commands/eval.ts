/**
 * `moka eval`: a model (float or 4-bit), optionally with an adapter applied unmerged, on built-in benchmark
 * tasks and/or user task files; writes <out>/<task>.json per task (metrics with standard errors, the protocol
 * and templates used, per-item records) and prints a summary table (or the summary as JSON with --json). See
 * lib/eval/evaluate.ts and docs/eval.md.
 */
import type { Command } from 'commander';
import { evaluate, formatEvalTable, taskNameList } from '../../lib/eval/index.ts';
import { parseInteger, parseProvider, parseProgressMode } from './cli-helpers.ts';

interface EvalCommandOptions {
  model: string;
  adapter?: string;
  tasks: string;
  data?: string;
  limit?: string;
  shots?: string;
  batchSize: string;
  numBeams?: string;
  maxNewTokens?: string;
  seed: string;
  out: string;
  provider: string;
  threads?: string;
  progress: string;
  json?: boolean;
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description(
      'evaluate a model (and adapter) on benchmark tasks; writes <out>/<task>.json and prints a table',
    )
    .requiredOption('--model <dir>', 'Hugging Face model directory, float or 4-bit (NF4/int4)')
    .option(
      '--adapter <dir>',
      'a trained adapter directory, applied unmerged (default: the base model alone)',
    )
    .requiredOption(
      '--tasks <list>',
      `comma-separated built-in tasks and/or task files (.json/.jsonl); built-in: ${taskNameList()}`,
    )
    .option('--data <dir>', "folder holding the built-in tasks' files downloaded from the Hugging Face Hub")
    .option('--limit <n>', 'score only the first N items of each task (per subject for mmlu)')
    .option('--shots <k>', "few-shot examples per item (default: the task's: 5 for mmlu, 0 otherwise)")
    .option('--batch-size <n>', 'sequences per model run', '8')
    .option('--num-beams <n>', "beams for generation tasks (default: the task's; 1 = greedy)")
    .option('--max-new-tokens <n>', "most generated tokens for generation tasks (default: the task's)")
    .option('--seed <n>', 'seed of the random few-shot sampler', '1234')
    .option(
      '--out <dir>',
      "where <task>.json files go (a run directory's evals/ is what moka report reads)",
      'evals',
    )
    .option('--provider <name>', 'execution provider: cpu, cuda, webgpu or auto', 'cpu')
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: the physical cores)')
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json or none', 'auto')
    .option('--json', 'print the summary as JSON instead of a table')
    .action(async (opts: EvalCommandOptions) => {
      const progress = parseProgressMode(opts.progress);
      const optionalInt = (v: string | undefined, flag: string, min: number) =>
        v === undefined ? undefined : parseInteger(v, flag, min);
      const tasks = opts.tasks
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t !== '');
      const summary = await evaluate({
        modelDir: opts.model,
        ...(opts.adapter ? { adapterDir: opts.adapter } : {}),
        tasks,
        ...(opts.data ? { dataDir: opts.data } : {}),
        limit: optionalInt(opts.limit, '--limit', 1),
        shots: optionalInt(opts.shots, '--shots', 0),
        batchSize: parseInteger(opts.batchSize, '--batch-size', 1),
        numBeams: optionalInt(opts.numBeams, '--num-beams', 1),
        maxNewTokens: optionalInt(opts.maxNewTokens, '--max-new-tokens', 1),
        seed: parseInteger(opts.seed, '--seed', 0),
        outDir: opts.out,
        provider: parseProvider(opts.provider),
        intraOpThreads: optionalInt(opts.threads, '--threads', 1),
        progress,
      });
      process.stdout.write(
        opts.json ? `${JSON.stringify(summary, null, 2)}\n` : `${formatEvalTable(summary)}\n`,
      );
    });
}
