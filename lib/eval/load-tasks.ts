/**
 * Resolving `--tasks` entries: a built-in task name (its split read from `--data DIR`) or the path of a user
 * task file. Everything is read and validated here, before a model is loaded or a result written, so a bad
 * input fails with one line and leaves nothing behind.
 */
import { UserError } from '../errors.ts';
import { BUILTIN_TASKS } from './builtin-tasks.ts';
import { expectedLayout, findSplitFiles, readTaskRecords } from './data-files.ts';
import type {
  DataRecord,
  GenerationDoc,
  LoadedTask,
  MultipleChoiceDoc,
  TaskDefinition,
} from './task-definition.ts';
import { loadUserTask, looksLikeTaskFile } from './user-tasks.ts';

export interface LoadTaskOptions {
  dataDir?: string;
  /** First N items (per subject for MMLU, as lm-eval's --limit applies per subtask). */
  limit?: number;
  /** Shots to take (default: the task's). */
  shots?: number;
}

/** The valid task names, for messages. */
export function taskNameList(): string {
  return [...BUILTIN_TASKS.keys()].join(', ');
}

function toDocs<D>(
  task: TaskDefinition,
  records: readonly DataRecord[],
  files: readonly string[],
  layout: string,
): D[] {
  return records.map((r, i) => {
    try {
      return task.toDoc(r) as D;
    } catch (err) {
      throw new UserError(
        `${files.length === 1 ? files[0] : files.join(', ')} record ${i + 1}: ${(err as Error).message} ` +
          `(task ${task.name}); expected ${layout}`,
      );
    }
  });
}

function applyLimit<D>(task: TaskDefinition, docs: D[], limit: number | undefined): D[] {
  if (limit === undefined) return docs;
  if (task.protocol === 'loglikelihood' && task.groupOf) {
    const groupOf = task.groupOf;
    const taken = new Map<string, number>();
    return docs.filter((d) => {
      const g = groupOf(d as MultipleChoiceDoc);
      const n = taken.get(g) ?? 0;
      taken.set(g, n + 1);
      return n < limit;
    });
  }
  return docs.slice(0, limit);
}

async function loadBuiltin(task: TaskDefinition, opts: LoadTaskOptions): Promise<LoadedTask> {
  const source = task.source!;
  if (opts.dataDir === undefined) {
    throw new UserError(
      `task ${task.name} reads its items from files: give --data DIR, the folder holding ${expectedLayout(source, source.split)}`,
    );
  }
  const layout = expectedLayout(source, source.split);
  const files = findSplitFiles(task.name, source, opts.dataDir, source.split);
  const records = await readTaskRecords(task.name, files, source.fields, layout);
  const docs = applyLimit(
    task,
    toDocs<MultipleChoiceDoc | GenerationDoc>(task, records, files, layout),
    opts.limit,
  );
  let fewshotDocs: MultipleChoiceDoc[] = [];
  if (task.protocol === 'loglikelihood') {
    const shots = opts.shots ?? task.shots;
    if (shots > 0) {
      if (!source.fewshotSplit) throw new UserError(`task ${task.name} takes no shots; drop --shots`);
      const fewLayout = expectedLayout(source, source.fewshotSplit);
      const fewFiles = findSplitFiles(task.name, source, opts.dataDir, source.fewshotSplit);
      const fewRecords = await readTaskRecords(task.name, fewFiles, source.fields, fewLayout);
      fewshotDocs = toDocs<MultipleChoiceDoc>(task, fewRecords, fewFiles, fewLayout);
    }
  }
  return { task, name: task.name, files, docs, fewshotDocs };
}

/** Loads every entry of `tasks`; names must be unique (they name the output files). */
export async function loadTasks(tasks: readonly string[], opts: LoadTaskOptions): Promise<LoadedTask[]> {
  if (tasks.length === 0)
    throw new UserError(`no tasks given; name built-in tasks (${taskNameList()}) or task files`);
  const out: LoadedTask[] = [];
  for (const entry of tasks) {
    const builtin = BUILTIN_TASKS.get(entry);
    let loaded: LoadedTask;
    if (builtin) {
      loaded = await loadBuiltin(builtin, opts);
    } else if (looksLikeTaskFile(entry)) {
      loaded = await loadUserTask(entry);
      if (opts.limit !== undefined) loaded.docs = loaded.docs.slice(0, opts.limit);
      if (opts.shots !== undefined && loaded.task.protocol === 'loglikelihood') {
        if (opts.shots > loaded.fewshotDocs.length) {
          throw new UserError(
            `task file ${entry} has ${loaded.fewshotDocs.length} "fewshot" items, fewer than --shots ${opts.shots}`,
          );
        }
      }
    } else {
      throw new UserError(
        `unknown task "${entry}"; built-in tasks are ${taskNameList()}, or give the path of a .json/.jsonl task file`,
      );
    }
    if (out.some((t) => t.name === loaded.name)) {
      throw new UserError(
        `task "${loaded.name}" is given twice (its results would share ${loaded.name}.json)`,
      );
    }
    out.push(loaded);
  }
  return out;
}
