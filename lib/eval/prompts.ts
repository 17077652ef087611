/**
 * Prompt rendering: Jinja templates over an item's fields, and lm-evaluation-harness's few-shot context
 * (`ConfigurableTask.fewshot_context`):
 *
 *   context = description + Σ_shots (text(shot) + target_delimiter + target(shot) + fewshot_delimiter) + text(doc)
 *
 * where text is `doc_to_text` (for partial scoring, the context of the shot's correct option) and target the
 * correct choice (for partial scoring, the shared continuation). Shots come from the task's few-shot split: the
 * first k (`first_n`, MMLU: of the item's own subject) or k drawn with the seed (`random`; the same docs on
 * every run with one seed, though not the ones Python's `random.Random(1234)` draws in lm-eval).
 */
import { Template } from '@huggingface/jinja';
import { UserError } from '../errors.ts';
import { mulberry32 } from '../engine/random.ts';
import type { DataRecord, MultipleChoiceDoc, MultipleChoiceTask } from './task-definition.ts';

const compiled = new Map<string, Template>();

/**
 * Renders a Jinja template over `fields`. Trailing newlines are kept (lm-eval renders with
 * `keep_trailing_newline=True`; plain Jinja drops one).
 */
export function renderTemplate(template: string, fields: DataRecord): string {
  let t = compiled.get(template);
  if (!t) {
    try {
      // A sentinel after the template keeps the trailing newline that Jinja would drop.
      t = new Template(`${template}\u0000`);
    } catch (err) {
      throw new UserError(
        `prompt template ${JSON.stringify(template)} is not valid Jinja: ${(err as Error).message}`,
      );
    }
    compiled.set(template, t);
  }
  const out = t.render(fields);
  return out.slice(0, -1);
}

/** The k shots for `doc` (see the module comment). `index` is the doc's position, to skip it in its own split. */
export function selectShots(
  task: MultipleChoiceTask,
  doc: MultipleChoiceDoc,
  pool: readonly MultipleChoiceDoc[],
  k: number,
  seed: number,
  index: number,
): MultipleChoiceDoc[] {
  if (k === 0) return [];
  const group = task.groupOf;
  const candidates = group ? pool.filter((d) => group(d) === group(doc)) : pool.filter((d) => d !== doc);
  if (candidates.length < k) {
    throw new UserError(
      `task ${task.name}: ${k} shots asked, but the few-shot split has only ${candidates.length} items` +
        `${group ? ` for ${group(doc)}` : ''}; lower --shots`,
    );
  }
  if (task.fewshotSampler === 'first_n') return candidates.slice(0, k);
  // A partial Fisher–Yates shuffle seeded by (seed, item index): the same shots for an item on every run.
  const random = mulberry32((seed * 1_000_003 + index) >>> 0);
  const idx = candidates.map((_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (idx.length - i));
    [idx[i], idx[j]] = [idx[j]!, idx[i]!];
  }
  return idx.slice(0, k).map((i) => candidates[i]!);
}

/** A multiple-choice item's scored texts: one context per choice or one shared, and the continuations. */
export interface MultipleChoicePrompt {
  /** One shared context, or (partial scoring) one per choice. */
  contexts: string[];
  /** One per choice (target delimiter + choice), or (partial scoring) one shared continuation. */
  continuations: string[];
}

/** The prompt of `doc` with `shots` before it (see the module comment). */
export function multipleChoicePrompt(
  task: MultipleChoiceTask,
  doc: MultipleChoiceDoc,
  shots: readonly MultipleChoiceDoc[],
): MultipleChoicePrompt {
  const text = (d: MultipleChoiceDoc) =>
    task.partial ? task.partial.contexts(d)[d.gold]! : renderTemplate(task.docToText, d.fields);
  const target = (d: MultipleChoiceDoc) => (task.partial ? task.partial.continuation(d) : d.choices[d.gold]!);
  let prefix = task.description ? renderTemplate(task.description, doc.fields) : '';
  for (const s of shots) prefix += text(s) + task.targetDelimiter + target(s) + task.fewshotDelimiter;
  if (task.partial) {
    return {
      contexts: task.partial.contexts(doc).map((c) => prefix + c),
      continuations: [task.targetDelimiter + task.partial.continuation(doc)],
    };
  }
  return {
    contexts: [prefix + renderTemplate(task.docToText, doc.fields)],
    continuations: doc.choices.map((c) => task.targetDelimiter + c),
  };
}
