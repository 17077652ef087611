/**
 * What a task is, as data: where its items come from (dataset files and their public field names), how an item
 * becomes a prompt (Jinja templates over the item's fields, as lm-evaluation-harness task YAMLs write them), the
 * delimiters and shots, and how it is scored. Built-in tasks (builtin-tasks.ts) and user task files
 * (user-tasks.ts) both become a `TaskDefinition`.
 *
 * Two protocols:
 *   - loglikelihood (lm-eval multiple choice): each choice is scored as loglikelihood(context, delimiter + choice);
 *     with `partial` (WinoGrande), each choice gives its own context and the continuation is shared;
 *   - generation (LLM-Adapters commonsense protocol): the prompt is generated from (greedy or beam search), the
 *     first match of `answerRegex` in the output is the prediction, and accuracy is exact string equality.
 */

/** One item of a dataset file: the record as the file holds it (public field names). */
export type DataRecord = Record<string, unknown>;

/** Where a built-in task's items come from. */
export interface TaskSource {
  /** The Hugging Face Hub dataset (and config) the files come from, e.g. "super_glue/boolq". */
  hub: string;
  /** Folders under --data DIR searched for the files, first match wins (e.g. ["boolq", "super_glue/boolq"]). */
  dirs: readonly string[];
  /** The split scored, e.g. "validation". */
  split: string;
  /** The split shots come from ("train", or "dev" for MMLU); absent: the task takes no shots. */
  fewshotSplit?: string;
  /** Fields each record must have (checked before anything runs). */
  fields: readonly string[];
}

/** An item of a multiple-choice task, after the task's own preprocessing. */
export interface MultipleChoiceDoc {
  /** The fields the templates read. */
  fields: DataRecord;
  /** The choice strings (what acc_norm measures the length of). */
  choices: string[];
  /** Index of the correct choice. */
  gold: number;
}

export interface MultipleChoiceTask {
  name: string;
  protocol: 'loglikelihood';
  /** One line saying what the task is (for listings and reports). */
  title: string;
  source?: TaskSource;
  /** Record → fields, choices, gold (throws a plain Error naming the field when the record is malformed). */
  toDoc(record: DataRecord): MultipleChoiceDoc;
  /** Jinja template of the question (lm-eval `doc_to_text`), over `doc.fields`. */
  docToText: string;
  /** Jinja template of the text before the shots (lm-eval `description`), over `doc.fields`. */
  description?: string;
  /** Put between the context and each choice (lm-eval `target_delimiter`, " "). */
  targetDelimiter: string;
  /** Put between shots (lm-eval `fewshot_delimiter`, "\n\n"). */
  fewshotDelimiter: string;
  /** Default number of shots. */
  shots: number;
  /** How shots are chosen from the few-shot split: the first k, or k drawn with the seed (lm-eval's samplers). */
  fewshotSampler: 'first_n' | 'random';
  /**
   * Partial scoring (WinoGrande): `partialContexts(doc)` gives one context per choice and
   * `partialContinuation(doc)` the shared continuation; the context of choice i replaces `docToText`.
   */
  partial?: {
    contexts: (doc: MultipleChoiceDoc) => string[];
    continuation: (doc: MultipleChoiceDoc) => string;
  };
  /** Metrics reported: acc always; acc_norm when choice lengths vary meaningfully. */
  metrics: readonly ('acc' | 'acc_norm')[];
  /** Items belong to groups averaged separately (MMLU subjects): the group of a doc. */
  groupOf?: (doc: MultipleChoiceDoc) => string;
  /** Human-readable description of the protocol (what the output JSON records). */
  protocolNote: string;
}

/** An item of a generation task. */
export interface GenerationDoc {
  fields: DataRecord;
  /** The exact string counted as correct. */
  answer: string;
}

export interface GenerationTask {
  name: string;
  protocol: 'generation';
  title: string;
  source?: TaskSource;
  toDoc(record: DataRecord): GenerationDoc;
  /** Jinja template of the whole prompt, over `doc.fields`. */
  promptTemplate: string;
  /** The prediction is the first match of this regex (JavaScript syntax) in the extracted output; none = wrong. */
  answerRegex: string | null;
  /** The output is cut at the first occurrence of this text before extraction (e.g. "### Response:"). */
  cutAt?: string;
  maxNewTokens: number;
  /** 1 = greedy decoding; more = beam search with this many beams. */
  numBeams: number;
  protocolNote: string;
}

export type TaskDefinition = MultipleChoiceTask | GenerationTask;

/** A task with its items loaded, ready to score. */
export interface LoadedTask {
  task: TaskDefinition;
  /** Name used for <out>/<name>.json. */
  name: string;
  /** Files the items came from. */
  files: string[];
  docs: (MultipleChoiceDoc | GenerationDoc)[];
  /** Shot candidates (the few-shot split), for multiple-choice tasks that take shots. */
  fewshotDocs: MultipleChoiceDoc[];
}

/** Reads `path` ("a.b.c") out of a record. */
export function fieldAt(record: DataRecord, path: string): unknown {
  let v: unknown = record;
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** A record field that must be a string. */
export function stringField(record: DataRecord, path: string): string {
  const v = fieldAt(record, path);
  if (typeof v !== 'string') throw new Error(`field "${path}" is ${describe(v)}, not a string`);
  return v;
}

/** A record field that must be a list of strings. */
export function stringListField(record: DataRecord, path: string): string[] {
  const v = fieldAt(record, path);
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new Error(`field "${path}" is ${describe(v)}, not a list of strings`);
  }
  return v as string[];
}

/** A record field holding an integer, as a number or a numeric string (datasets store labels both ways). */
export function integerField(record: DataRecord, path: string): number {
  const v = fieldAt(record, path);
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n)) throw new Error(`field "${path}" is ${describe(v)}, not an integer`);
  return n;
}

export function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  const s = JSON.stringify(v);
  return `${typeof v} ${s && s.length > 40 ? `${s.slice(0, 40)}…` : s}`;
}

/** Checks a gold index against the number of choices. */
export function checkGold(gold: number, choices: readonly unknown[], field: string): number {
  if (!Number.isInteger(gold) || gold < 0 || gold >= choices.length) {
    throw new Error(`field "${field}" gives answer ${gold}, outside the ${choices.length} choices`);
  }
  return gold;
}
