/**
 * Parameter counts as people write them: "5M", "500k", "2.5m", "1,200,000" or a plain number.
 * Budgets arrive from the CLI and from run configs, so parsing lives at this boundary and fails with a
 * message that shows accepted spellings.
 */
import { UserError } from '../errors.ts';

const SUFFIX: Record<string, number> = { '': 1, k: 1e3, m: 1e6, b: 1e9, g: 1e9 };

/** Parses a parameter count; `what` names the field in the error (e.g. "--budget"). */
export function parseParamCount(value: string | number, what = 'parameter count'): number {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value > 0) return value;
    throw new UserError(`${what}: ${value} is not a positive whole number of parameters`);
  }
  const m = /^\s*(\d+(?:[,_]\d{3})*(?:\.\d+)?)\s*([kmbg]?)\s*$/i.exec(value);
  if (!m) {
    throw new UserError(`${what}: "${value}" is not a parameter count; write e.g. 5M, 500k, 2.5M or 1200000`);
  }
  const n = Math.round(Number(m[1]!.replace(/[,_]/g, '')) * SUFFIX[m[2]!.toLowerCase()]!);
  if (!(n > 0)) throw new UserError(`${what}: "${value}" must be at least 1 parameter`);
  return n;
}

/** Short human form: 5243520 → "5.24M", 655616 → "655.62k", 950 → "950". */
export function formatParamCount(n: number): string {
  const units: Array<[number, string]> = [
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [size, unit] of units) {
    if (n >= size) return `${Number((n / size).toFixed(2))}${unit}`;
  }
  return String(n);
}

/** Exact form with thousands separators: 5243520 → "5,243,520". */
export function formatInteger(n: number): string {
  return n.toLocaleString('en-US');
}
