/**
 * `moka demo`'s inputs: a tiny random LLaMA checkpoint, a synthetic multiple-choice task whose answers a model can
 * learn (a code 1-4 for each of 24 things: facts absent from a random model, so the base scores about chance),
 * training data stating those facts (Alpaca records), and a run config comparing MoKA with a LoRA baseline of about the
 * same trainable-parameter count (LoRA's rank: MoKA's planned count over LoRA's parameters per rank, rounded).
 *
 * Eval task file (lib/eval user task): {"targetDelimiter": "", "items": [{"context", "choices", "answer"}]}.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAdapterConfig } from '../adapters/adapter-config.ts';
import { planAdapter } from '../adapters/planner.ts';
import { resolveTargets } from '../adapters/targets.ts';
import { mulberry32 } from '../engine/random.ts';
import { writeTinyCheckpoint } from '../model/tiny-checkpoint.ts';
import type { RunConfigInput } from './run-config.ts';

/** One token each, so no choice wins on length (lm-eval's acc sums log-likelihoods). */
const CODES = ['1', '2', '3', '4'] as const;
const THINGS = 'ABCDEFGHIJKLMNOPQRSTUVWX'.split('');
/** Code index of each thing (fixed: the task is data, not a draw). */
const ANSWERS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3];

export interface DemoOptions {
  /** Where the model, data and config go. */
  dir: string;
  /** Peak learning rate of both variants (default 0.02). */
  learningRate?: number;
  /** Optimizer steps (default 200). */
  steps?: number;
  /** Tiny model size (default hidden 64, 2 layers). */
  hiddenSize?: number;
  numLayers?: number;
  seed?: number;
}

export interface DemoInputs {
  modelDir: string;
  trainFile: string;
  taskFile: string;
  configFile: string;
  config: RunConfigInput;
  /** Trainable parameters of the two variants. */
  params: { moka: number; lora: number };
}

/**
 * Training records (`text` format): "<letter><code>" for each fact, four times, shuffled with a seed so batches
 * mix the facts. The code follows its letter directly, so the fact is a bigram the adapted layers can store.
 */
function trainingRecords(seed: number): { text: string }[] {
  const rand = mulberry32(seed);
  const out: { text: string }[] = [];
  for (let rep = 0; rep < 4; rep++) {
    THINGS.forEach((thing, i) => out.push({ text: `${thing}${CODES[ANSWERS[i]!]!}` }));
  }
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** The eval task: context "<letter>", continuation "<code>" (targetDelimiter ""), tokenized as in training. */
function task(): Record<string, unknown> {
  return {
    targetDelimiter: '',
    items: THINGS.map((thing, i) => ({ context: thing, choices: [...CODES], answer: ANSWERS[i]! })),
  };
}

export async function prepareDemo(opts: DemoOptions): Promise<DemoInputs> {
  const seed = opts.seed ?? 1;
  const modelDir = join(opts.dir, 'model');
  const dataDir = join(opts.dir, 'data');
  await mkdir(dataDir, { recursive: true });
  const tiny = await writeTinyCheckpoint({
    dir: modelDir,
    seed,
    hiddenSize: opts.hiddenSize ?? 64,
    intermediateSize: 2 * (opts.hiddenSize ?? 64),
    numLayers: opts.numLayers ?? 2,
    numHeads: 4,
    numKvHeads: 2,
    maxPositionEmbeddings: 128,
    force: true,
  });
  const trainFile = join(dataDir, 'codes-train.jsonl');
  await writeFile(
    trainFile,
    trainingRecords(seed)
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
  );
  const taskFile = join(dataDir, 'codes.json');
  await writeFile(taskFile, `${JSON.stringify(task(), null, 1)}\n`);

  const moka = { type: 'moka', targetModules: 'all-linear', plan: { count: 2 } } as const;
  const mokaParams = planAdapter(tiny.config, parseAdapterConfig(moka)).totalParams;
  const loraTargets = resolveTargets(
    tiny.config,
    parseAdapterConfig({ type: 'lora', targetModules: 'all-linear' }),
  );
  const r = Math.max(1, Math.round(mokaParams / loraTargets.reduce((s, t) => s + t.out + t.in, 0)));
  const lora = { type: 'lora', targetModules: 'all-linear', r, alpha: 2 * r } as const;
  const loraParams = planAdapter(tiny.config, parseAdapterConfig(lora)).totalParams;

  const config: RunConfigInput = {
    model: modelDir,
    quantize: { format: 'nf4', blockSize: 64, doubleQuant: true },
    adapters: [
      { name: 'moka', ...moka },
      { name: 'lora', ...lora },
    ],
    data: { train: trainFile, format: 'text' },
    training: {
      seed,
      maxSteps: opts.steps ?? 200,
      microBatchSize: 8,
      learningRate: opts.learningRate ?? 0.02,
      warmupSteps: 4,
      maxLength: 32,
      padToMultipleOf: 16,
      evalRecords: 8,
      evalEvery: 0,
      checkpointEvery: 50,
      logEvery: 50,
    },
    evals: { tasks: [taskFile] },
    compute: { provider: 'cpu', threads: 1 },
  };
  const configFile = join(opts.dir, 'demo-run.json');
  await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`);
  return {
    modelDir,
    trainFile,
    taskFile,
    configFile,
    config,
    params: { moka: mokaParams, lora: loraParams },
  };
}
