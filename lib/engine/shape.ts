/**
 * Shapes whose dimensions are numbers or named symbols ("batch", "seq", or products such as "batch*seq").
 * Graphs are built and checked symbolically, then compiled per concrete binding of the names (static shapes
 * are what ORT plans memory for best), so symbols only need products and exact division.
 */
export type Dim = number | string;
export type Shape = readonly Dim[];

interface Monomial {
  coef: number;
  names: string[]; // sorted, with repetition
}

function parse(d: Dim): Monomial {
  if (typeof d === 'number') return { coef: d, names: [] };
  let coef = 1;
  const names: string[] = [];
  for (const part of d.split('*')) {
    const p = part.trim();
    if (/^\d+$/.test(p)) coef *= Number(p);
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(p)) names.push(p);
    else throw new Error(`invalid dimension "${d}": use numbers, names and '*'`);
  }
  names.sort();
  return { coef, names };
}

function format(m: Monomial): Dim {
  if (m.names.length === 0) return m.coef;
  const parts = m.coef === 1 ? m.names : [String(m.coef), ...m.names];
  return parts.join('*');
}

/** Canonical form of a dimension ("seq*batch" → "batch*seq"). */
export function canonDim(d: Dim): Dim {
  return format(parse(d));
}

export function dimEq(a: Dim, b: Dim): boolean {
  return canonDim(a) === canonDim(b);
}

export function mulDims(...dims: Dim[]): Dim {
  const acc: Monomial = { coef: 1, names: [] };
  for (const d of dims) {
    const m = parse(d);
    acc.coef *= m.coef;
    acc.names.push(...m.names);
  }
  acc.names.sort();
  return format(acc);
}

/** a / b when exact, else null. */
export function divDims(a: Dim, b: Dim): Dim | null {
  const ma = parse(a);
  const mb = parse(b);
  if (mb.coef === 0 || ma.coef % mb.coef !== 0) return null;
  const names = [...ma.names];
  for (const n of mb.names) {
    const i = names.indexOf(n);
    if (i < 0) return null;
    names.splice(i, 1);
  }
  return format({ coef: ma.coef / mb.coef, names });
}

export function numel(shape: Shape): Dim {
  return mulDims(...shape);
}

export function isStatic(shape: Shape): shape is readonly number[] {
  return shape.every((d) => typeof d === 'number');
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function shapeEq(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => dimEq(d, b[i]!));
}

/** Numpy-style broadcast of two shapes, or null when they are incompatible. */
export function broadcastShapes(a: Shape, b: Shape): Dim[] | null {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (dimEq(da, db)) out.push(canonDim(da));
    else if (da === 1) out.push(canonDim(db));
    else if (db === 1) out.push(canonDim(da));
    else return null;
  }
  return out;
}

/** Evaluates a dimension under a binding of names to sizes. */
export function bindDim(d: Dim, binding: ReadonlyMap<string, number>): number {
  const m = parse(d);
  let v = m.coef;
  for (const n of m.names) {
    const b = binding.get(n);
    if (b === undefined) throw new Error(`dimension "${n}" has no value: feed an input that has it`);
    v *= b;
  }
  return v;
}

export function bindShape(shape: Shape, binding: ReadonlyMap<string, number>): number[] {
  return shape.map((d) => bindDim(d, binding));
}

/** Normalises a possibly negative axis for a tensor of rank `rank`. */
export function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${what}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}
