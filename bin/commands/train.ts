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
import {
  ADAPTER_TYPES,
  defaultAdapterConfig,
  parseAdapterConfig,
  type AdapterConfig,
  type AdapterType,
} from '../../lib/adapters/adapter-config.ts';
import type { ProgressMode } from '../../lib/train/progress.ts';
import { runTraining, trainingSummary } from '../../lib/train/run-training.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';
import { collect, parseInteger, parseNumber, parseProvider, readJsonFile } from './cli-helpers.ts';

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
}

const PROGRESS: readonly ProgressMode[] = ['auto', 'bar', 'json', 'none'];

function readConfigFile(file: string): Record<string, unknown> {
  const json = readJsonFile(file, '--config');
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new UserError(`--config ${file} must hold a JSON object ({"training": {...}, "adapter": {...}})`);
  }
  return json as Record<string, unknown>;
}

/** `field=value` with value parsed as JSON when it is JSON (numbers, booleans, null), else taken as a string. */
function parseSetting(setting: string): [string, unknown] {
  const at = setting.indexOf('=');
  if (at <= 0) throw new UserError(`--set expects field=value (e.g. learningRate=1e-3), got "${setting}"`);
  const raw = setting.slice(at + 1);
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    /* a plain string such as schedule=cosine */
  }
  return [setting.slice(0, at).trim(), value];
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
    .action(async (opts: TrainCommandOptions) => {
      // A repeatable option always has a value (its [] default), so commander cannot tell it is missing.
      if (opts.data.length === 0) {
        throw new UserError('give the training data with --data FILE_OR_DIR (JSON array or JSON Lines)');
      }
      const provider = parseProvider(opts.provider);
      if (!PROGRESS.includes(opts.progress as ProgressMode)) {
        throw new UserError(`--progress must be one of ${PROGRESS.join(', ')}, got "${opts.progress}"`);
      }
      const file = opts.config ? readConfigFile(opts.config) : {};
      const runStyle = 'training' in file || 'adapter' in file;
      const trainingInput: Record<string, unknown> = {
        ...((runStyle ? file.training : file) as Record<string, unknown> | undefined),
      };
      for (const s of opts.set) {
        const [k, v] = parseSetting(s);
        trainingInput[k] = v;
      }
      if (opts.maxSteps !== undefined) trainingInput.maxSteps = parseInteger(opts.maxSteps, '--max-steps', 1);
      if (opts.learningRate !== undefined)
        trainingInput.learningRate = parseNumber(opts.learningRate, '--learning-rate');
      if (opts.seed !== undefined) trainingInput.seed = parseInteger(opts.seed, '--seed', 0);
      const training = parseTrainConfig(
        trainingInput,
        opts.config ? `${opts.config} training` : 'training config',
      );

      if (opts.adapter !== undefined && !ADAPTER_TYPES.includes(opts.adapter as AdapterType)) {
        throw new UserError(`--adapter must be one of ${ADAPTER_TYPES.join(', ')}, got "${opts.adapter}"`);
      }
      let adapter: AdapterConfig;
      if (runStyle && file.adapter !== undefined) {
        adapter = parseAdapterConfig(file.adapter, `${opts.config} adapter`);
        if (opts.adapter && opts.adapter !== adapter.type) {
          throw new UserError(
            `--adapter ${opts.adapter} contradicts the "${adapter.type}" adapter of ${opts.config}; give one of them`,
          );
        }
      } else {
        adapter = defaultAdapterConfig((opts.adapter ?? 'moka') as AdapterType);
      }

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
        progress: opts.progress as ProgressMode,
      });
      process.stdout.write(`${JSON.stringify(trainingSummary(result))}\n`);
      if (result.stoppedBy === 'signal') {
        const num =
          constants.signals[result.signal as keyof typeof constants.signals] ?? constants.signals.SIGTERM;
        // Not a success: a retrying scheduler must run the command again, which resumes from the checkpoint.
        process.exit(128 + num);
      }
    });
}
