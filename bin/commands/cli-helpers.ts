/**
 * Parsing shared by the commands: flag values (integers, numbers, providers, storage dtypes), repeatable options
 * and JSON files named on the command line. Each failure is a one-line UserError naming the flag or file.
 */
import { readFileSync } from 'node:fs';
import type { ProviderChoice } from '../../lib/engine/index.ts';
import type { ProgressMode } from '../../lib/train/progress.ts';
import { UserError } from '../../lib/errors.ts';
import { parseFloatDtype } from '../../lib/model/dtype-convert.ts';

/** A whole number in decimal digits (no sign, exponent, hex or fraction) of at least `min`. */
export function parseInteger(value: string, flag: string, min: number): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UserError(`${flag} must be an integer >= ${min}, got "${value}"`);
  }
  return n;
}

/** A finite number (decimal, exponent forms such as 1e-3 included). */
export function parseNumber(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n))
    throw new UserError(`${flag} must be a number, got "${value}"`);
  return n;
}

/** A finite number above 0. */
export function parsePositiveNumber(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new UserError(`${flag} must be a positive number, got "${value}"`);
  }
  return n;
}

/** commander's reducer for a repeatable option (`--data a --data b` → ['a', 'b']); give it a [] default. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];

export const PROVIDERS: readonly ProviderChoice[] = ['cpu', 'cuda', 'webgpu', 'auto'];

export function parseProvider(value: string, flag = '--provider'): ProviderChoice {
  if (!PROVIDERS.includes(value as ProviderChoice)) {
    throw new UserError(`${flag} must be one of ${PROVIDERS.join(', ')}, got "${value}"`);
  }
  return value as ProviderChoice;
}

export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'bar', 'json', 'none'];

/** A progress mode (lib/train/progress.ts): a bar on a terminal or JSON lines otherwise (auto), or one of them. */
export function parseProgressMode(value: string, flag = '--progress'): ProgressMode {
  if (!PROGRESS_MODES.includes(value as ProgressMode)) {
    throw new UserError(`${flag} must be one of ${PROGRESS_MODES.join(', ')}, got "${value}"`);
  }
  return value as ProgressMode;
}

/** A dtype weights are written in: f32, f16 or bf16 (also float32, fp16, bfloat16, F32, …). */
export function parseStorageDtype(value: string, flag = '--dtype'): 'F32' | 'F16' | 'BF16' {
  const d = parseFloatDtype(value);
  if (d === null || d === 'F64') throw new UserError(`${flag} must be f32, f16 or bf16, got "${value}"`);
  return d;
}

/** The parsed JSON of a file named on the command line; `what` says what it is (e.g. "--config"). */
export function readJsonFile(path: string, what: string): unknown {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${what} ${path}: no such file; check the path`);
    if (code === 'EISDIR') throw new UserError(`${what} ${path} is a directory; give a JSON file`);
    throw new UserError(`cannot read ${what} ${path}: ${code ?? (err as Error).message}`);
  }
  let text: string;
  try {
    // fatal: bytes that are not UTF-8 would otherwise become U+FFFD inside a value without a word.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new UserError(`${what} ${path} is not UTF-8 text; save it as UTF-8`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UserError(`${what} ${path} is not valid JSON (${(err as Error).message}); fix the file`);
  }
}
