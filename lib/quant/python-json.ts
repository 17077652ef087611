/**
 * The exact text Python's `json.dumps(d)` produces for the small flat dicts bitsandbytes packs into a uint8
 * tensor (`pack_dict_to_tensor`): `{"key": value, ...}` with ", " and ": " separators, ints as ints and floats
 * in Python's repr (`0.0`, `1e-05`, `0.10000000149011612`), which JSON.stringify does not reproduce.
 * Writing the same bytes bnb would write keeps our checkpoints indistinguishable from transformers' own.
 */

/** Marks a number that Python holds as a float (JS numbers do not say whether 2 means 2 or 2.0). */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJsonValue = string | number | boolean | null | PyFloat | readonly number[];

/** Python's repr() of a float: shortest round-trip digits; exponent form below 1e-4 and from 1e16 on. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() with no argument gives the shortest digits that round-trip, like Python's repr.
  const [mantissa, expText] = Math.abs(x).toExponential().split('e') as [string, string];
  const digits = mantissa.replace('.', '');
  const exp = Number(expText);
  const decpt = exp + 1; // value = 0.DIGITS × 10^decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : String(Math.abs(exp));
  return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
}

function dumpValue(v: PyJsonValue): string {
  if (v instanceof PyFloat) return pythonFloatRepr(v.value);
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string')
    return JSON.stringify(v).replace(
      /[\u007f-\uffff]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new RangeError(`${v} is not an integer; wrap floats in PyFloat`);
    return String(v);
  }
  return `[${v.map((d) => dumpValue(d)).join(', ')}]`;
}

/** `json.dumps` of a flat dict, keys in the given order (Python dicts keep insertion order). */
export function pythonJsonDumps(entries: ReadonlyArray<readonly [string, PyJsonValue]>): string {
  return `{${entries.map(([k, v]) => `${dumpValue(k)}: ${dumpValue(v)}`).join(', ')}}`;
}
