/**
 * Dataset files → validated records. Files are JSON arrays or JSON Lines (decided by content, not extension, since
 * many ".json" datasets are JSON Lines); a directory stands for every .json/.jsonl file below it, in name order.
 *
 * Formats, detected per record (or forced with `format`):
 * - chat: `messages: [{role, content}, …]` with at least one non-empty assistant turn;
 * - text: `text` (a plain language-modelling sample);
 * - commonsense: `instruction`, `input`, `output`, `answer` (LLM-Adapters commonsense_170k);
 * - alpaca: `instruction`, optional `input`, `output`.
 *
 * A record that cannot be used (bytes that are not UTF-8, invalid JSON, not an object, missing or mistyped fields, an
 * empty response) is a
 * BAD record: it is kept out, counted and reported with its file and line. Up to `maxBadRecordFraction` of all
 * records they are skipped with a warning; above it the load fails with a UserError listing the first few, so a
 * wrong file or a wrong format override is caught at once instead of training on the remains.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { UserError } from '../errors.ts';
import { mulberry32 } from '../engine/random.ts';
import type { ChatMessage } from '../model/chat-template.ts';
import type { DatasetFormat } from './train-config.ts';

export interface RecordSource {
  file: string;
  /** 1-based line where the record starts. */
  line: number;
}

export type DatasetRecord =
  | { format: 'alpaca'; instruction: string; input: string; output: string; source: RecordSource }
  | {
      format: 'commonsense';
      instruction: string;
      input: string;
      output: string;
      answer: string;
      source: RecordSource;
    }
  | { format: 'chat'; messages: ChatMessage[]; source: RecordSource }
  | { format: 'text'; text: string; source: RecordSource };

export interface BadRecord extends RecordSource {
  reason: string;
}

export interface LoadedRecords {
  files: string[];
  records: DatasetRecord[];
  bad: BadRecord[];
}

const DATA_EXTENSIONS = ['.json', '.jsonl'];

/** The data files named by `paths`: files as given, directories expanded recursively (sorted, hidden skipped). */
export async function listDatasetFiles(paths: string | readonly string[]): Promise<string[]> {
  const list = typeof paths === 'string' ? [paths] : [...paths];
  if (list.length === 0)
    throw new UserError('no dataset path given; pass a .json/.jsonl file or a directory');
  const out: string[] = [];
  for (const p of list) {
    let st;
    try {
      st = await stat(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new UserError(`dataset ${p}: no such file or directory`);
      throw new UserError(`dataset ${p}: cannot read it (${(err as Error).message})`);
    }
    if (st.isDirectory()) {
      const found = await walk(p);
      if (found.length === 0) {
        throw new UserError(`dataset directory ${p} holds no .json or .jsonl files`);
      }
      out.push(...found);
    } else {
      out.push(p);
    }
  }
  return out;
}

async function walk(dir: string): Promise<string[]> {
  const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  const out: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(full)));
    else if (DATA_EXTENSIONS.some((x) => e.name.toLowerCase().endsWith(x))) out.push(full);
  }
  return out;
}

/** One piece of JSON text with the line it starts on. */
interface Chunk {
  text: string;
  line: number;
  /** Set when the chunk could not be delimited (e.g. an unterminated array). */
  error?: string;
}

/**
 * Splits a JSON array into its elements without parsing them, so one malformed element is one bad record with a
 * line number instead of a failed file. Tracks strings (with escapes) and bracket depth; elements end at a comma
 * at depth 0.
 */
export function splitJsonArray(text: string): Chunk[] {
  let i = text.indexOf('[');
  let line = 1;
  for (let k = 0; k < i; k++) if (text.charCodeAt(k) === 10) line++;
  i++;
  const chunks: Chunk[] = [];
  let depth = 0;
  let inString = false;
  let start = -1;
  let startLine = line;
  let closed = false;
  const flush = (end: number) => {
    if (start < 0) return;
    chunks.push({ text: text.slice(start, end), line: startLine });
    start = -1;
  };
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) line++;
    if (inString) {
      if (c === 92) {
        // backslash: skip the escaped character (an escaped newline is invalid JSON but still one character)
        i++;
        if (text.charCodeAt(i) === 10) line++;
      } else if (c === 34) inString = false;
      continue;
    }
    const isSpace = c === 32 || c === 10 || c === 13 || c === 9;
    if (start < 0 && !isSpace && c !== 44 && !(c === 93 && depth === 0)) {
      start = i;
      startLine = line;
    }
    if (c === 34) inString = true;
    else if (c === 123 || c === 91) depth++;
    else if (c === 125 || c === 93) {
      if (depth === 0 && c === 93) {
        flush(i);
        closed = true;
        break;
      }
      depth--;
    } else if (c === 44 && depth === 0) {
      if (start < 0) chunks.push({ text: '', line, error: 'empty element (two commas in a row)' });
      flush(i);
    }
  }
  if (!closed) {
    if (start >= 0) {
      chunks.push({
        text: text.slice(start),
        line: startLine,
        error: 'the JSON array is not closed (is the file truncated?)',
      });
    } else {
      chunks.push({ text: '', line, error: 'the JSON array is not closed (is the file truncated?)' });
    }
  } else {
    const rest = text.slice(i + 1).trim();
    if (rest !== '') chunks.push({ text: '', line, error: 'text after the end of the JSON array' });
  }
  return chunks;
}

function splitJsonLines(text: string): Chunk[] {
  const chunks: Chunk[] = [];
  const lines = text.split('\n');
  lines.forEach((l, k) => {
    if (l.trim() !== '') chunks.push({ text: l, line: k + 1 });
  });
  return chunks;
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

/** Detects the format of a parsed record from its fields. */
export function detectFormat(obj: Record<string, unknown>): DatasetFormat | null {
  if ('messages' in obj) return 'chat';
  if ('instruction' in obj) return 'answer' in obj ? 'commonsense' : 'alpaca';
  if ('text' in obj) return 'text';
  return null;
}

/** Validates one parsed value as a record of `format` ('auto': detected); returns the record or the reason. */
export function toRecord(
  value: unknown,
  format: DatasetFormat | 'auto',
  source: RecordSource,
): DatasetRecord | string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return `expected a JSON object, got ${typeName(value)}`;
  }
  const obj = value as Record<string, unknown>;
  const f = format === 'auto' ? detectFormat(obj) : format;
  if (f === null) {
    const keys = Object.keys(obj).slice(0, 6).join(', ');
    return `no known fields (has ${keys || 'none'}); expected instruction/output (Alpaca), messages (chat) or text`;
  }
  const str = (key: string, optional = false): string | { error: string } => {
    const v = obj[key];
    if (v === undefined || v === null) return optional ? '' : { error: `missing field "${key}"` };
    if (typeof v !== 'string') return { error: `field "${key}" must be a string, got ${typeName(v)}` };
    return v;
  };
  switch (f) {
    case 'alpaca':
    case 'commonsense': {
      const instruction = str('instruction');
      const input = str('input', true);
      const output = str('output');
      const answer = f === 'commonsense' ? str('answer') : '';
      for (const v of [instruction, input, output, answer]) if (typeof v !== 'string') return v.error;
      if ((instruction as string).trim() === '') return 'empty instruction';
      if ((output as string).trim() === '') return 'empty response ("output" is blank)';
      const base = {
        instruction: instruction as string,
        input: input as string,
        output: output as string,
        source,
      };
      return f === 'commonsense'
        ? { format: 'commonsense', ...base, answer: answer as string }
        : { format: 'alpaca', ...base };
    }
    case 'text': {
      const text = str('text');
      if (typeof text !== 'string') return text.error;
      if (text.trim() === '') return 'empty "text"';
      return { format: 'text', text, source };
    }
    case 'chat': {
      const messages = obj.messages;
      if (!Array.isArray(messages) || messages.length === 0) {
        return `field "messages" must be a non-empty list of {role, content}, got ${typeName(messages)}`;
      }
      const out: ChatMessage[] = [];
      for (const [k, m] of messages.entries()) {
        if (m === null || typeof m !== 'object' || Array.isArray(m))
          return `messages[${k}] must be an object`;
        const { role, content } = m as Record<string, unknown>;
        if (typeof role !== 'string' || role === '') return `messages[${k}].role must be a non-empty string`;
        if (typeof content !== 'string')
          return `messages[${k}].content must be a string, got ${typeName(content)}`;
        out.push({ role, content });
      }
      if (!out.some((m) => m.role === 'assistant' && m.content.trim() !== '')) {
        return 'no assistant message with content (nothing to train on)';
      }
      return { format: 'chat', messages: out, source };
    }
  }
}

/** Reads every record of the given files or directories; bad records are collected, never thrown. */
export async function readDatasetRecords(
  paths: string | readonly string[],
  opts: { format?: DatasetFormat | 'auto'; displayRoot?: string } = {},
): Promise<LoadedRecords> {
  const files = await listDatasetFiles(paths);
  const records: DatasetRecord[] = [];
  const bad: BadRecord[] = [];
  const format = opts.format ?? 'auto';
  for (const file of files) {
    const shown = opts.displayRoot ? relative(opts.displayRoot, file) || file : file;
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (err) {
      throw new UserError(`dataset ${file}: cannot read it (${(err as Error).message})`);
    }
    // Decoding replaces invalid bytes with U+FFFD (and drops a BOM); the lines holding them are found separately so
    // that their records are counted as bad instead of training on replacement characters.
    const text = new TextDecoder('utf-8').decode(bytes);
    const badUtf8Lines = invalidUtf8Lines(bytes);
    const trimmed = text.trimStart();
    if (trimmed === '') {
      bad.push({ file: shown, line: 1, reason: 'empty file' });
      continue;
    }
    let chunks: Chunk[];
    if (trimmed.startsWith('[')) {
      chunks = splitJsonArray(text);
    } else {
      chunks = splitJsonLines(text);
      // A pretty-printed single object is neither an array nor JSON Lines: say so instead of listing its lines.
      if (chunks.length > 1 && trimmed.startsWith('{') && !isJson(chunks[0]!.text) && isJson(text)) {
        throw new UserError(
          `dataset ${shown}: holds one JSON object; expected a JSON array of records or JSON Lines (one record per line)`,
        );
      }
    }
    for (const c of chunks) {
      const source = { file: shown, line: c.line };
      if (c.error) {
        bad.push({ ...source, reason: c.error });
        continue;
      }
      const lastLine = c.line + (c.text.match(/\n/g)?.length ?? 0);
      const badLine = badUtf8Lines.find((l) => l >= c.line && l <= lastLine);
      if (badLine !== undefined) {
        bad.push({
          ...source,
          reason: `invalid UTF-8 on line ${badLine} (bytes that are not UTF-8 text); save the file as UTF-8`,
        });
        continue;
      }
      let value: unknown;
      try {
        value = JSON.parse(c.text);
      } catch (err) {
        bad.push({ ...source, reason: `invalid JSON (${(err as Error).message})` });
        continue;
      }
      const r = toRecord(value, format, source);
      if (typeof r === 'string') bad.push({ ...source, reason: r });
      else records.push(r);
    }
  }
  return {
    files: files.map((f) => (opts.displayRoot ? relative(opts.displayRoot, f) || f : f)),
    records,
    bad,
  };
}

/** 1-based numbers of the lines holding bytes that are not valid UTF-8 (none for almost every file: one pass). */
export function invalidUtf8Lines(bytes: Uint8Array): number[] {
  const fatal = new TextDecoder('utf-8', { fatal: true });
  try {
    fatal.decode(bytes);
    return [];
  } catch {
    // A newline byte (0x0A) never occurs inside a UTF-8 sequence, so each line can be checked on its own.
  }
  const lines: number[] = [];
  let start = 0;
  let line = 1;
  for (let i = 0; i <= bytes.length; i++) {
    if (i === bytes.length || bytes[i] === 10) {
      try {
        fatal.decode(bytes.subarray(start, i));
      } catch {
        lines.push(line);
      }
      start = i + 1;
      line++;
    }
  }
  return lines;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

export function formatBadRecords(bad: readonly BadRecord[], max = 5): string {
  const shown = bad.slice(0, max).map((b) => `${b.file}:${b.line}: ${b.reason}`);
  const more = bad.length > max ? `\n  … and ${bad.length - max} more` : '';
  return `  ${shown.join('\n  ')}${more}`;
}

/**
 * Applies the bad-record policy: throws when there are no good records, or when the bad fraction exceeds
 * `maxFraction`; otherwise warns (when there are any) and returns.
 */
export function checkBadRecords(
  loaded: LoadedRecords,
  maxFraction: number,
  what: string,
  warn: (message: string) => void,
): void {
  const total = loaded.records.length + loaded.bad.length;
  if (loaded.records.length === 0) {
    const detail = loaded.bad.length
      ? `; all ${loaded.bad.length} records are bad:\n${formatBadRecords(loaded.bad)}`
      : '';
    throw new UserError(`${what} is empty: no usable records in ${loaded.files.join(', ')}${detail}`);
  }
  if (loaded.bad.length === 0) return;
  const fraction = loaded.bad.length / total;
  const summary = `${loaded.bad.length} of ${total} records (${(100 * fraction).toFixed(2)}%)`;
  if (fraction > maxFraction) {
    throw new UserError(
      `${what}: ${summary} are bad, above maxBadRecordFraction ${maxFraction}; fix them, choose datasetFormat, ` +
        `or raise maxBadRecordFraction:\n${formatBadRecords(loaded.bad)}`,
    );
  }
  warn(`${what}: skipping ${summary} that are bad:\n${formatBadRecords(loaded.bad)}`);
}

/** A seeded permutation of 0…n−1 (Fisher–Yates with mulberry32). */
export function seededPermutation(n: number, seed: number): number[] {
  const rand = mulberry32(seed >>> 0);
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  return idx;
}

/** Distinct random streams from one seed (split, data order) so that changing one never shifts another. */
export function streamSeed(seed: number, stream: string, index = 0): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const ch of `${stream}#${index}`) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
}

/**
 * Seeded held-out split: `count` records (or round(fraction · n), at least 1 when the fraction is positive) go to
 * eval; the rest, in their original order, to train. Both keep the file order, so the split does not depend on
 * how the data order is later shuffled.
 */
export function splitHeldOut<T>(
  records: readonly T[],
  opts: { fraction: number; count: number | null; seed: number },
): { train: T[]; eval: T[] } {
  const n = records.length;
  let k = opts.count ?? (opts.fraction > 0 ? Math.max(1, Math.round(n * opts.fraction)) : 0);
  if (k === 0) return { train: [...records], eval: [] };
  if (k >= n) {
    throw new UserError(
      `the held-out split would take ${k} of ${n} records and leave none to train on; lower evalFraction/evalRecords ` +
        'or give a separate eval file',
    );
  }
  k = Math.min(k, n - 1);
  const held = new Set(seededPermutation(n, streamSeed(opts.seed, 'eval-split')).slice(0, k));
  const train: T[] = [];
  const evalSet: T[] = [];
  records.forEach((r, i) => (held.has(i) ? evalSet : train).push(r));
  return { train, eval: evalSet };
}
