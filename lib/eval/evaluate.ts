/**
 * `evaluate()`: a model (float or 4-bit, with an optional adapter applied unmerged) on a list of tasks, writing
 * `<outDir>/<task>.json` per task, atomically:
 *
 *   {format: "moka-eval", version, task, title, protocol, protocolNote, template: {...}, shots, limit, seed,
 *    model: {dir, format, configSha256}, adapter: {dir, type, trainableParameters, weightsSha256} | null,
 *    data: {files}, metrics: {name: {value, stderr}}, groups?: {subject: {acc, items}}, items, records: [...]}
 *
 * Each record holds what is needed to audit the item: the rendered prompt (context or contexts), each choice's
 * continuation, log-likelihood, token count and is_greedy, the predictions (acc, acc_norm), the gold index
 * and correctness; for generation, the prompt, the raw output, the extracted prediction and the answer.
 *
 * Order of work: every task is read and validated, then the model and adapter are loaded (an adapter for another
 * base model fails here), every prompt is rendered and tokenized (a request the tokenizer refuses fails here), and
 * only then does anything run or get written.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProviderChoice } from '../engine/index.ts';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { loadAdaptedModel } from '../adapters/adapted-model.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../adapters/adapter-files.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import type { LlamaModel } from '../model/llama-model.ts';
import { quantFormatOf } from '../quant/quantized-checkpoint.ts';
import { SharedContextScorer } from '../model/shared-context-scoring.ts';
import { createPhaseProgress, type PhaseProgressReporter } from '../train/progress.ts';
import { loadTasks } from './load-tasks.ts';
import {
  extractAnswer,
  macroAverage,
  meanWithStderr,
  microAverage,
  multipleChoicePredictions,
  type MetricValue,
} from './metrics.ts';
import { multipleChoicePrompt, renderTemplate, selectShots, type MultipleChoicePrompt } from './prompts.ts';
import type { TokenRequest } from './requests.ts';
import { formatScore } from './report-model.ts';
import { EVAL_RESULT_FORMAT, EVAL_RESULT_VERSION } from './run-data.ts';
import { generateOutputs, tokenizeMultipleChoice, scoreMultipleChoice } from './scorers.ts';
import type {
  GenerationDoc,
  GenerationTask,
  LoadedTask,
  MultipleChoiceDoc,
  MultipleChoiceTask,
} from './task-definition.ts';

export type { MetricValue } from './metrics.ts';

export interface EvaluateOptions {
  /** Float or 4-bit (NF4/int4) HF checkpoint directory. */
  modelDir: string;
  /** PEFT-style adapter directory, applied unmerged; absent = the base model. */
  adapterDir?: string;
  /** Built-in task names (e.g. 'boolq', 'arc_easy', 'mmlu', 'piqa-gen') and/or paths to user task files (.json/.jsonl). */
  tasks: readonly string[];
  /** Folder holding the built-in tasks' downloaded files (required only by built-in tasks). */
  dataDir?: string;
  /** First N items per task (per subject for MMLU). */
  limit?: number;
  /** Overrides the task's default number of few-shot examples. */
  shots?: number;
  /** Sequences per model run (default 8). */
  batchSize?: number;
  /** Writes <outDir>/<task>.json atomically (a task file's name is its basename without extension). */
  outDir: string;
  provider?: ProviderChoice;
  intraOpThreads?: number;
  /** Same modes as training's progress (default auto: a bar on a terminal, JSON lines otherwise; on stderr). */
  progress?: 'auto' | 'bar' | 'json' | 'none';
  /** Seed of the random few-shot sampler (default 1234, lm-eval's). */
  seed?: number;
  /** Overrides the beams of generation tasks (1 = greedy). */
  numBeams?: number;
  /** Overrides the max new tokens of generation tasks. */
  maxNewTokens?: number;
  /** Where progress goes (default stderr). */
  logStream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface TaskResult {
  /** The task name used for <task>.json. */
  task: string;
  protocol: 'loglikelihood' | 'generation';
  /** e.g. acc, acc_norm (multiple choice), exact_match (generation); mmlu also acc_macro. */
  metrics: Record<string, MetricValue>;
  items: number;
  /** Path of <outDir>/<task>.json. */
  file: string;
}

export interface EvalSummary {
  modelDir: string;
  adapterDir: string | null;
  tasks: TaskResult[];
}

function checkInt(value: number | undefined, what: string, min: number): void {
  if (value !== undefined && (!Number.isInteger(value) || value < min)) {
    throw new UserError(`${what} must be an integer >= ${min}, got ${value}`);
  }
}

function sha256(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** What identifies the model and adapter in a result file. */
function identity(model: LlamaModel, modelDir: string, adapterDir: string | undefined) {
  const configPath = join(modelDir, 'config.json');
  const modelId = {
    dir: modelDir,
    format: quantFormatOf(model.config.raw as Record<string, unknown>, configPath) ?? 'float',
    configSha256: existsSync(configPath) ? sha256(readFileSync(configPath)) : null,
  };
  if (!adapterDir) return { model: modelId, adapter: null };
  const cfg = JSON.parse(readFileSync(join(adapterDir, ADAPTER_CONFIG_FILE), 'utf8')) as Record<
    string,
    unknown
  >;
  return {
    model: modelId,
    adapter: {
      dir: adapterDir,
      type: (cfg.adapter as { type?: string } | undefined)?.type ?? null,
      trainableParameters: cfg.trainable_parameters ?? null,
      weightsSha256: sha256(readFileSync(join(adapterDir, ADAPTER_WEIGHTS_FILE))),
    },
  };
}

interface TaskOutcome {
  metrics: Record<string, MetricValue>;
  groups?: Record<string, { acc: MetricValue; items: number }>;
  records: Record<string, unknown>[];
  extra: Record<string, unknown>;
}

/** A task with its prompts rendered and tokenized, ready to run. */
type PreparedTask = (progress: PhaseProgressReporter) => Promise<TaskOutcome>;

/** Renders and tokenizes every item now (so a refused one fails before anything runs); returns the run. */
function prepareMultipleChoice(
  loaded: LoadedTask,
  task: MultipleChoiceTask,
  scorer: SharedContextScorer,
  opts: EvaluateOptions,
): PreparedTask {
  const docs = loaded.docs as MultipleChoiceDoc[];
  const shots = opts.shots ?? task.shots;
  const seed = opts.seed ?? 1234;
  const prompts = docs.map((d, i) =>
    multipleChoicePrompt(task, d, selectShots(task, d, loaded.fewshotDocs, shots, seed, i)),
  );
  const requests = tokenizeMultipleChoice(scorer.model.tokenizer(), prompts, loaded.name);
  return (progress) =>
    runMultipleChoice(loaded, task, docs, prompts, requests, shots, scorer, opts, progress);
}

async function runMultipleChoice(
  loaded: LoadedTask,
  task: MultipleChoiceTask,
  docs: MultipleChoiceDoc[],
  prompts: MultipleChoicePrompt[],
  requests: TokenRequest[][],
  shots: number,
  scorer: SharedContextScorer,
  opts: EvaluateOptions,
  progress: PhaseProgressReporter,
): Promise<TaskOutcome> {
  const scores = await scoreMultipleChoice(scorer, requests, opts.batchSize ?? 8, (done) =>
    progress.update(loaded.name, done, docs.length, `${done}/${docs.length} items`),
  );
  const acc: number[] = [];
  const accNorm: number[] = [];
  const records = docs.map((d, i) => {
    const lls = scores[i]!.map((s) => s.loglik);
    const pred = multipleChoicePredictions(lls, d.choices);
    acc.push(pred.acc === d.gold ? 1 : 0);
    accNorm.push(pred.accNorm === d.gold ? 1 : 0);
    const p = prompts[i]!;
    return {
      index: i,
      ...(task.groupOf ? { group: task.groupOf(d) } : {}),
      ...(p.contexts.length === 1 ? { prompt: p.contexts[0] } : { prompts: p.contexts }),
      choices: d.choices.map((text, c) => ({
        text,
        continuation: p.continuations.length === 1 ? p.continuations[0] : p.continuations[c],
        loglik: scores[i]![c]!.loglik,
        tokens: scores[i]![c]!.tokens,
        isGreedy: scores[i]![c]!.isGreedy,
      })),
      gold: d.gold,
      prediction: pred.acc,
      correct: pred.acc === d.gold,
      ...(task.metrics.includes('acc_norm')
        ? { predictionNorm: pred.accNorm, correctNorm: pred.accNorm === d.gold }
        : {}),
    };
  });
  const metrics: Record<string, MetricValue> = {};
  let groups: TaskOutcome['groups'];
  if (task.groupOf) {
    const by = new Map<string, number[]>();
    docs.forEach((d, i) => {
      const g = task.groupOf!(d);
      if (!by.has(g)) by.set(g, []);
      by.get(g)!.push(acc[i]!);
    });
    groups = {};
    for (const [g, xs] of [...by.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      groups[g] = { acc: meanWithStderr(xs), items: xs.length };
    }
    const list = Object.values(groups);
    metrics.acc = microAverage(list.map((g) => ({ metric: g.acc, size: g.items })));
    metrics.acc_macro = macroAverage(list.map((g) => g.acc));
  } else {
    metrics.acc = meanWithStderr(acc);
  }
  if (task.metrics.includes('acc_norm')) metrics.acc_norm = meanWithStderr(accNorm);
  return {
    metrics,
    ...(groups ? { groups } : {}),
    records,
    extra: {
      shots,
      fewshotSampler: task.fewshotSampler,
      template: {
        description: task.description ?? null,
        docToText: task.docToText,
        targetDelimiter: task.targetDelimiter,
        fewshotDelimiter: task.fewshotDelimiter,
        partialScoring: task.partial !== undefined,
      },
    },
  };
}

function prepareGeneration(
  loaded: LoadedTask,
  task: GenerationTask,
  model: LlamaModel,
  opts: EvaluateOptions,
): PreparedTask {
  const docs = loaded.docs as GenerationDoc[];
  const prompts = docs.map((d) => renderTemplate(task.promptTemplate, d.fields));
  return (progress) => runGeneration(loaded, task, docs, prompts, model, opts, progress);
}

async function runGeneration(
  loaded: LoadedTask,
  task: GenerationTask,
  docs: GenerationDoc[],
  prompts: string[],
  model: LlamaModel,
  opts: EvaluateOptions,
  progress: PhaseProgressReporter,
): Promise<TaskOutcome> {
  const settings = {
    maxNewTokens: opts.maxNewTokens ?? task.maxNewTokens,
    numBeams: opts.numBeams ?? task.numBeams,
  };
  const outputs = await generateOutputs(model, prompts, settings, (done) =>
    progress.update(loaded.name, done, docs.length, `${done}/${docs.length} items`),
  );
  const correct: number[] = [];
  const records = docs.map((d, i) => {
    const prediction = extractAnswer(outputs[i]!, task.answerRegex, task.cutAt);
    correct.push(prediction === d.answer ? 1 : 0);
    return {
      index: i,
      prompt: prompts[i],
      output: outputs[i],
      prediction,
      answer: d.answer,
      correct: prediction === d.answer,
    };
  });
  return {
    metrics: { exact_match: meanWithStderr(correct) },
    records,
    extra: {
      shots: 0,
      template: { prompt: task.promptTemplate, answerRegex: task.answerRegex, cutAt: task.cutAt ?? null },
      decoding: settings.numBeams > 1 ? { method: 'beam', ...settings } : { method: 'greedy', ...settings },
    },
  };
}

/**
 * Evaluates the model on every task; see the module comment. Throws UserError on bad input (unknown task,
 * malformed task file or dataset file, missing --data, an adapter for another base model) before writing
 * anything.
 */
export async function evaluate(opts: EvaluateOptions): Promise<EvalSummary> {
  checkInt(opts.limit, 'limit', 1);
  checkInt(opts.shots, 'shots', 0);
  checkInt(opts.batchSize, 'batch size', 1);
  checkInt(opts.seed, 'seed', 0);
  checkInt(opts.numBeams, 'number of beams', 1);
  checkInt(opts.maxNewTokens, 'max new tokens', 1);
  if (!opts.outDir) throw new UserError('give an output directory for the results (--out DIR)');
  const tasks = await loadTasks(opts.tasks, { dataDir: opts.dataDir, limit: opts.limit, shots: opts.shots });
  const model = await loadAdaptedModel(opts.modelDir, {
    ...(opts.adapterDir ? { adapter: opts.adapterDir } : {}),
    ...(opts.provider ? { provider: opts.provider } : {}),
    ...(opts.intraOpThreads ? { intraOpThreads: opts.intraOpThreads } : {}),
  });
  const scorer = new SharedContextScorer(model);
  const progress = createPhaseProgress('eval', {
    mode: opts.progress ?? 'auto',
    ...(opts.logStream ? { stream: opts.logStream } : {}),
  });
  try {
    const ids = identity(model, opts.modelDir, opts.adapterDir);
    // Every prompt is rendered and tokenized before anything runs or is written.
    const prepared = tasks.map((loaded) =>
      loaded.task.protocol === 'loglikelihood'
        ? prepareMultipleChoice(loaded, loaded.task, scorer, opts)
        : prepareGeneration(loaded, loaded.task, model, opts),
    );
    await makeDirs(opts.outDir); // not mkdir -p: Node's never returns under /proc
    const results: TaskResult[] = [];
    for (const [k, loaded] of tasks.entries()) {
      const t = loaded.task;
      progress.update(loaded.name, 0, loaded.docs.length, `0/${loaded.docs.length} items`);
      const outcome = await prepared[k]!(progress);
      const file = join(opts.outDir, `${loaded.name}.json`);
      const doc = {
        format: EVAL_RESULT_FORMAT,
        version: EVAL_RESULT_VERSION,
        task: loaded.name,
        title: t.title,
        protocol: t.protocol,
        protocolNote: t.protocolNote,
        ...outcome.extra,
        limit: opts.limit ?? null,
        seed: opts.seed ?? 1234,
        ...ids,
        data: { files: loaded.files },
        metrics: outcome.metrics,
        ...(outcome.groups ? { groups: outcome.groups } : {}),
        items: loaded.docs.length,
        createdAt: new Date().toISOString(),
        records: outcome.records,
      };
      await writeFileAtomic(file, `${JSON.stringify(doc, null, 1)}\n`);
      results.push({
        task: loaded.name,
        protocol: t.protocol,
        metrics: outcome.metrics,
        items: loaded.docs.length,
        file,
      });
    }
    return { modelDir: opts.modelDir, adapterDir: opts.adapterDir ?? null, tasks: results };
  } finally {
    progress.stop();
    await scorer.release();
    await model.close();
  }
}

/** The summary as a plain-text table (task, items, metrics with ± stderr) for a terminal. */
export function formatEvalTable(summary: EvalSummary): string {
  const rows = summary.tasks.map((t) => [
    t.task,
    String(t.items),
    Object.entries(t.metrics)
      .map(([k, v]) => `${k} ${formatScore(v)}`)
      .join('  '),
  ]);
  const head = ['task', 'items', 'metrics (%)'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 2 ? c : c.padEnd(w[i]!))).join('  ');
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}
