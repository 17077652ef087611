/**
 * User-defined tasks: a task file passed by path in `--tasks`.
 *
 * Items (all of one kind):
 *   multiple choice  {"context": string, "choices": [string, …], "answer": index | the choice text}
 *   generation       {"prompt": string, "answer": string}
 *
 * Files:
 *   - a JSON array of items, or JSON Lines (one item per line): the defaults below apply;
 *   - a JSON object with a header and the items: {"type"?, "description"?, "targetDelimiter"?, "shots"?,
 *     "fewshot"?: [items], "regex"?, "maxNewTokens"?, "numBeams"?, "items": [items]}.
 * Defaults: multiple choice scores " " + choice after the context (lm-eval's target delimiter), acc and
 * acc_norm, no shots; generation decodes greedily up to 32 new tokens, and without a "regex" the prediction is
 * the output's first line, trimmed. The task's name (and <out>/<name>.json) is the file's basename without its
 * extension.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { z } from 'zod';
import { UserError } from '../errors.ts';
import { readRecords } from './data-files.ts';
import type {
  GenerationDoc,
  GenerationTask,
  LoadedTask,
  MultipleChoiceDoc,
  MultipleChoiceTask,
} from './task-definition.ts';

const mcItem = z.strictObject({
  context: z.string(),
  choices: z.array(z.string()).min(2, 'give at least two choices'),
  answer: z.union([z.number().int().nonnegative(), z.string()]),
});
const genItem = z.strictObject({ prompt: z.string().min(1, 'the prompt is empty'), answer: z.string() });
const header = z.strictObject({
  name: z.string().optional(),
  type: z.enum(['multiple_choice', 'generation']).optional(),
  description: z.string().optional(),
  targetDelimiter: z.string().optional(),
  shots: z.number().int().nonnegative().optional(),
  fewshot: z.array(z.unknown()).optional(),
  regex: z.string().optional(),
  maxNewTokens: z.number().int().positive().optional(),
  numBeams: z.number().int().positive().optional(),
  items: z.array(z.unknown()).min(1, 'the task has no items'),
});

const HOWTO =
  'each item must be {"context", "choices", "answer"} (multiple choice) or {"prompt", "answer"} (generation); ' +
  'see docs/eval.md';

function issue(file: string, where: string, err: z.ZodError): UserError {
  const first = err.issues[0]!;
  const path = first.path.length ? ` field "${first.path.join('.')}"` : '';
  return new UserError(`${file} ${where}${path}: ${first.message}; ${HOWTO}`);
}

function mcDoc(file: string, where: string, raw: unknown): MultipleChoiceDoc {
  const r = mcItem.safeParse(raw);
  if (!r.success) throw issue(file, where, r.error);
  const { context, choices, answer } = r.data;
  const gold = typeof answer === 'number' ? answer : choices.indexOf(answer);
  if (gold < 0 || gold >= choices.length) {
    throw new UserError(
      `${file} ${where}: "answer" ${JSON.stringify(answer)} is not one of the ${choices.length} choices ` +
        '(give an index from 0 or the exact choice text)',
    );
  }
  return { fields: { context }, choices, gold };
}

function genDoc(file: string, where: string, raw: unknown): GenerationDoc {
  const r = genItem.safeParse(raw);
  if (!r.success) throw issue(file, where, r.error);
  return { fields: { prompt: r.data.prompt }, answer: r.data.answer };
}

function readJson(path: string): unknown {
  if (!existsSync(path)) throw new UserError(`task file ${path}: no such file; check the path`);
  try {
    // fatal: bytes that are not UTF-8 would otherwise become U+FFFD in a prompt without a word.
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path)));
  } catch (err) {
    if (err instanceof TypeError)
      throw new UserError(`task file ${path} is not UTF-8 text; save it as UTF-8`);
    throw new UserError(`task file ${path} is not valid JSON (${(err as Error).message}); fix the file`);
  }
}

/** The task name of a task file: its basename without the extension. */
function userTaskName(path: string): string {
  return basename(path, extname(path));
}

/** True when a `--tasks` entry names a file rather than a built-in task. */
export function looksLikeTaskFile(entry: string): boolean {
  return /\.(json|jsonl)$/i.test(entry) || entry.includes('/') || entry.includes('\\');
}

/** Reads and validates a user task file; every problem is a one-line UserError naming the file and item. */
export async function loadUserTask(path: string): Promise<LoadedTask> {
  const ext = extname(path).toLowerCase();
  if (ext !== '.json' && ext !== '.jsonl') {
    throw new UserError(`task file ${path}: use a .json or .jsonl file (${HOWTO})`);
  }
  let raw: unknown[] | unknown;
  if (ext === '.json') {
    raw = readJson(path);
  } else {
    raw = await readRecords(path);
  }
  let h: z.output<typeof header> | null = null;
  let items: unknown[];
  if (Array.isArray(raw)) {
    items = raw;
  } else if (raw && typeof raw === 'object') {
    const r = header.safeParse(raw);
    if (!r.success) throw issue(path, 'header', r.error);
    h = r.data;
    items = h.items;
  } else {
    throw new UserError(`task file ${path} is neither a JSON array of items nor a task object; ${HOWTO}`);
  }
  if (items.length === 0) throw new UserError(`task file ${path} has no items; ${HOWTO}`);
  const first = items[0];
  const kind =
    h?.type ?? (first && typeof first === 'object' && 'prompt' in first ? 'generation' : 'multiple_choice');
  const name = userTaskName(path);
  // What every user task shares; its items are parsed here, so toDoc is never called.
  const base = {
    name,
    title: `user task ${basename(path)}`,
    toDoc: (): never => {
      throw new Error('internal: user tasks are parsed already');
    },
  };
  if (kind === 'generation') {
    if (h?.regex !== undefined) {
      try {
        new RegExp(h.regex);
      } catch (err) {
        throw new UserError(
          `task file ${path}: "regex" is not a valid regular expression (${(err as Error).message})`,
        );
      }
    }
    const task: GenerationTask = {
      ...base,
      protocol: 'generation',
      promptTemplate: '{{prompt}}',
      answerRegex: h?.regex ?? null,
      maxNewTokens: h?.maxNewTokens ?? 32,
      numBeams: h?.numBeams ?? 1,
      protocolNote:
        `generation from the item's prompt (${h?.numBeams && h.numBeams > 1 ? `beam search, ${h.numBeams} beams` : 'greedy'}), ` +
        (h?.regex ? `first match of /${h.regex}/` : "the output's first line, trimmed") +
        ', exact match with "answer"',
    };
    return {
      task,
      name,
      files: [path],
      docs: items.map((it, i) => genDoc(path, `item ${i + 1}`, it)),
      fewshotDocs: [],
    };
  }
  const shots = h?.shots ?? 0;
  const fewshotDocs = (h?.fewshot ?? []).map((it, i) => mcDoc(path, `fewshot item ${i + 1}`, it));
  if (shots > fewshotDocs.length) {
    throw new UserError(
      `task file ${path} asks for ${shots} shots but gives ${fewshotDocs.length} "fewshot" items; add items or lower "shots"`,
    );
  }
  const task: MultipleChoiceTask = {
    ...base,
    protocol: 'loglikelihood',
    docToText: '{{context}}',
    ...(h?.description !== undefined ? { description: h.description } : {}),
    targetDelimiter: h?.targetDelimiter ?? ' ',
    fewshotDelimiter: '\n\n',
    shots,
    fewshotSampler: 'first_n',
    metrics: ['acc', 'acc_norm'],
    protocolNote: `loglikelihood of "${h?.targetDelimiter ?? ' '}" + choice after the context; acc, acc_norm`,
  };
  return {
    task,
    name,
    files: [path],
    docs: items.map((it, i) => mcDoc(path, `item ${i + 1}`, it)),
    fewshotDocs,
  };
}
