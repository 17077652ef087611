/**
 * `moka train`: fine-tunes an adapter on a LLaMA-family checkpoint (see lib/train/run-training.ts and
 * docs/training.md). A run directory holds metrics.jsonl, checkpoints/step-N and, at the end, adapter/. Running the
 * same command again continues from the newest complete checkpoint (what a retried job does); --resume insists on
 * one, --no-resume refuses a directory that has some. After SIGTERM/SIGINT it finishes the step, writes a
 * checkpoint and exits 128 + the signal number, so a job scheduler sees the interruption and can retry.
 */
import type { Command } from 'commander';
import { constants } from 'node:os';
import { UserError } from '../../lib/errors.ts';
import { ADAPTER_TYPES } from '../../lib/adapters/adapter-config.ts';
import { formatTrainingSummary, runTraining, trainingSummary } from '../../lib/train/run-training.ts';
import {
  parseSetting,
  resolveTrainingInputs,
  type TrainingOverride,
} from '../../lib/train/training-inputs.ts';
import {
  collect,
  parseInteger,
  parseNumber,
  parseProvider,
  readJsonFile,
  parseProgressMode,
} from './cli-helpers.ts';

interface TrainCommandOptions {
  model: string;
  data: string[];
  evalData: string[];
  out: string;
  config?: string;
  adapter?: string;
  set: string[];
  maxSteps?: string;
  learningRate?: string;
  seed?: string;
  resume?: boolean;
  provider: string;
  threads?: string;
  progress: string;
  json?: boolean;
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('fine-tune an adapter (moka, mokas, krona, lora, dora) on a model and instruction data')
    .requiredOption(
      '--model <dir>',
      'Hugging Face model directory (config.json, safetensors, tokenizer.json)',
    )
    .option(
      '--data <path>',
      'training data: .json/.jsonl file or directory (repeatable, required)',
      collect,
      [],
    )
    .option(
      '--eval-data <path>',
      'held-out data (repeatable); default: a seeded split of --data',
      collect,
      [],
    )
    .requiredOption('--out <dir>', 'run directory: metrics.jsonl, checkpoints/, adapter/')
    .option('--config <file>', 'JSON with a "training" and/or "adapter" section (or a bare training section)')
    .option('--adapter <type>', `adapter type with its defaults: ${ADAPTER_TYPES.join(', ')} (default moka)`)
    .option(
      '--set <field=value>',
      'override a training field, e.g. --set schedule=cosine (repeatable)',
      collect,
      [],
    )
    .option('--max-steps <n>', 'shortcut for --set maxSteps=N')
    .option('--learning-rate <x>', 'shortcut for --set learningRate=X')
    .option('--seed <n>', 'shortcut for --set seed=N')
    .option('--resume', 'continue from the newest complete checkpoint (fail when there is none)')
    .option('--no-resume', 'start afresh (fail when the run directory already holds checkpoints)')
    .option('--provider <name>', 'execution provider: cpu, cuda, webgpu or auto', 'cpu')
    .option('--threads <n>', 'ONNX Runtime intra-op threads (1 = bit-reproducible on CPU)')
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json or none', 'auto')
    .option('--json', 'print the final summary as JSON (the default when stdout is not a terminal)')
    .action(async (opts: TrainCommandOptions) => {
      // A repeatable option always has a value (its [] default), so commander cannot tell it is missing.
      if (opts.data.length === 0) {
        throw new UserError('give the training data with --data FILE_OR_DIR (JSON array or JSON Lines)');
      }
      const provider = parseProvider(opts.provider);
      const progress = parseProgressMode(opts.progress);
      const overrides: TrainingOverride[] = opts.set.map((setting) => parseSetting(setting));
      if (opts.maxSteps !== undefined) {
        const value = parseInteger(opts.maxSteps, '--max-steps', 1);
        overrides.push({ flag: `--max-steps ${opts.maxSteps}`, field: 'maxSteps', value });
      }
      if (opts.learningRate !== undefined) {
        const value = parseNumber(opts.learningRate, '--learning-rate');
        overrides.push({ flag: `--learning-rate ${opts.learningRate}`, field: 'learningRate', value });
      }
      if (opts.seed !== undefined) {
        overrides.push({
          flag: `--seed ${opts.seed}`,
          field: 'seed',
          value: parseInteger(opts.seed, '--seed', 0),
        });
      }
      const { training, adapter } = resolveTrainingInputs({
        ...(opts.config ? { file: { path: opts.config, json: readJsonFile(opts.config, '--config') } } : {}),
        overrides,
        ...(opts.adapter !== undefined ? { adapterType: opts.adapter } : {}),
      });

      const result = await runTraining({
        modelDir: opts.model,
        train: opts.data,
        eval: opts.evalData,
        outputDir: opts.out,
        training,
        adapter,
        resume: opts.resume ?? 'auto',
        provider,
        ...(opts.threads !== undefined ? { intraOpThreads: parseInteger(opts.threads, '--threads', 1) } : {}),
        progress,
      });
      const summary = trainingSummary(result);
      process.stdout.write(
        opts.json || !process.stdout.isTTY ? `${JSON.stringify(summary)}\n` : formatTrainingSummary(summary),
      );
      if (result.stoppedBy === 'signal') {
        const num =
          constants.signals[result.signal as keyof typeof constants.signals] ?? constants.signals.SIGTERM;
        // Not a success: a retrying scheduler must run the command again, which resumes from the checkpoint.
        process.exit(128 + num);
      }
    });
}
