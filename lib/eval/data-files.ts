/**
 * Dataset files as users download them from the Hugging Face Hub: JSON (an array of records), JSON Lines, and
 * Parquet (the Hub's native export, read with hyparquet), and where a built-in task's split lives under
 * `--data DIR`.
 *
 * Layout searched, for each folder F the task names (e.g. `boolq`, `super_glue/boolq`) and split S:
 *   F/S.jsonl, F/S.json, F/S.parquet           a single file per split
 *   F/S-*.parquet, F/data/S-*.parquet          the Hub's shards (`validation-00000-of-00001.parquet`), in name order
 *   F/S/*.parquet                              the Hub's parquet conversion (`refs/convert/parquet`: `S/0000.parquet`)
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { UserError } from '../errors.ts';
import { invalidUtf8Lines } from '../train/datasets.ts';
import { fieldAt, type DataRecord, type TaskSource } from './task-definition.ts';

/** JSON values as hyparquet returns them, with 64-bit integers (bigint) made numbers. */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object' && !(v instanceof Date) && !(v instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

/** Top-level column names of a Parquet file. */
async function parquetColumns(path: string): Promise<string[]> {
  const file = await asyncBufferFromFile(path);
  const schema = parquetSchema(await parquetMetadataAsync(file));
  return schema.children.map((c) => c.element.name);
}

/**
 * The records of a .json (array), .jsonl or .parquet file. A .json file that is not one JSON value is read as
 * JSON Lines (the Hub's JSON exports are often JSON Lines named .json). Throws UserError naming the file (and the
 * line for JSON Lines) when it cannot be read.
 */
export async function readRecords(path: string): Promise<DataRecord[]> {
  if (!existsSync(path)) throw new UserError(`${path}: no such file; check the path`);
  const ext = extname(path).toLowerCase();
  if (ext === '.parquet') {
    try {
      const file = await asyncBufferFromFile(path);
      return ((await parquetReadObjects({ file })) as unknown[]).map((r) => plain(r) as DataRecord);
    } catch (err) {
      throw new UserError(
        `${path} is not a readable Parquet file (${(err as Error).message}); re-download it`,
      );
    }
  }
  if (ext !== '.json' && ext !== '.jsonl') {
    throw new UserError(`${path}: unsupported file type "${ext}"; use .json, .jsonl or .parquet`);
  }
  const bytes = readFileSync(path);
  // Invalid bytes would otherwise become U+FFFD inside a question or a choice without a word.
  const badLines = invalidUtf8Lines(bytes);
  if (badLines.length > 0) {
    throw new UserError(
      `${path} line ${badLines[0]} is not UTF-8 text (${badLines.length} line(s) in all); save the file as UTF-8`,
    );
  }
  const text = new TextDecoder('utf-8').decode(bytes);
  let records: unknown[] | null = null;
  if (ext === '.json') {
    try {
      const parsed: unknown = JSON.parse(text);
      if (!Array.isArray(parsed)) {
        throw new UserError(`${path} holds a JSON ${typeof parsed}, not an array of records; give an array`);
      }
      records = parsed;
    } catch (err) {
      if (err instanceof UserError) throw err;
      // Not one JSON value: try JSON Lines below.
    }
  }
  if (records === null) {
    records = [];
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '') continue;
      try {
        records.push(JSON.parse(line));
      } catch (err) {
        throw new UserError(
          `${path} line ${i + 1} is not valid JSON (${(err as Error).message}); give a JSON array or one JSON object per line`,
        );
      }
    }
  }
  records.forEach((r, i) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) {
      throw new UserError(
        `${path} record ${i + 1} is not a JSON object; each record must be {"field": value, …}`,
      );
    }
  });
  return records as DataRecord[];
}

const SINGLE = ['.jsonl', '.json', '.parquet'];

/** Files of one split in folder `dir` (see the module comment), or [] when there are none. */
function splitFilesIn(dir: string, split: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return [];
  for (const ext of SINGLE) {
    const f = join(dir, `${split}${ext}`);
    if (existsSync(f)) return [f];
  }
  const shards = (d: string) =>
    existsSync(d) && statSync(d).isDirectory()
      ? readdirSync(d)
          .filter((n) => n.startsWith(`${split}-`) && n.endsWith('.parquet'))
          .sort()
          .map((n) => join(d, n))
      : [];
  for (const d of [dir, join(dir, 'data')]) {
    const found = shards(d);
    if (found.length) return found;
  }
  const sub = join(dir, split);
  if (existsSync(sub) && statSync(sub).isDirectory()) {
    const found = readdirSync(sub)
      .filter((n) => n.endsWith('.parquet'))
      .sort()
      .map((n) => join(sub, n));
    if (found.length) return found;
  }
  return [];
}

/** The layout a task expects, for error messages. */
export function expectedLayout(source: TaskSource, split: string): string {
  const f = source.dirs[0]!;
  return (
    `${f}/${split}.jsonl (or .json, .parquet, ${split}-*.parquet, data/${split}-*.parquet, ${split}/*.parquet; ` +
    `folder ${source.dirs.join(' | ')}), from the Hub dataset ${source.hub}`
  );
}

/** The files of a built-in task's split under `dataDir`; a UserError naming the expected layout when absent. */
export function findSplitFiles(task: string, source: TaskSource, dataDir: string, split: string): string[] {
  for (const d of source.dirs) {
    const found = splitFilesIn(join(dataDir, d), split);
    if (found.length) return found;
  }
  throw new UserError(
    `task ${task}: no "${split}" split under ${dataDir}; expected ${expectedLayout(source, split)}`,
  );
}

/** The records of `files`, checked to carry `fields`; a UserError names the file, record and field. */
export async function readTaskRecords(
  task: string,
  files: readonly string[],
  fields: readonly string[],
  layout: string,
): Promise<DataRecord[]> {
  const out: DataRecord[] = [];
  for (const file of files) {
    if (extname(file).toLowerCase() === '.parquet') {
      const columns = await parquetColumns(file).catch((err: Error) => {
        throw new UserError(`${file} is not a readable Parquet file (${err.message}); re-download it`);
      });
      const missing = fields.map((f) => f.split('.')[0]!).filter((f) => !columns.includes(f));
      if (missing.length) {
        throw new UserError(
          `${file}: task ${task} needs column "${missing[0]}", but the file has columns ` +
            `[${columns.join(', ')}]; expected ${layout}`,
        );
      }
    }
    const records = await readRecords(file);
    records.forEach((r, i) => {
      for (const f of fields) {
        if (fieldAt(r, f) === undefined) {
          throw new UserError(
            `${file} record ${i + 1}: task ${task} needs field "${f}", which is missing (fields: ` +
              `${Object.keys(r).join(', ')}); expected ${layout}`,
          );
        }
      }
    });
    out.push(...records);
  }
  return out;
}
