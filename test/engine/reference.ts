/**
 * Plain TypeScript float64 references for the engine's ops (loops, no ORT), used by the forward tests.
 * Arrays are row-major {shape, data}.
 */
export interface ND {
  shape: number[];
  data: Float64Array;
}

export const nd = (shape: number[], data: ArrayLike<number>): ND => ({
  shape,
  data: Float64Array.from(data),
});
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const strides = (s: number[]) => {
  const out = new Array<number>(s.length).fill(1);
  for (let i = s.length - 2; i >= 0; i--) out[i] = out[i + 1]! * s[i + 1]!;
  return out;
};

export function broadcast2(a: ND, b: ND, f: (x: number, y: number) => number): ND {
  const rank = Math.max(a.shape.length, b.shape.length);
  const pad = (s: number[]) => [...new Array(rank - s.length).fill(1), ...s];
  const sa = pad(a.shape);
  const sb = pad(b.shape);
  const shape = sa.map((d, i) => Math.max(d, sb[i]!));
  const out = new Float64Array(size(shape));
  const st = strides(shape);
  const sta = strides(sa);
  const stb = strides(sb);
  for (let i = 0; i < out.length; i++) {
    let ia = 0;
    let ib = 0;
    for (let k = 0; k < rank; k++) {
      const c = Math.floor(i / st[k]!) % shape[k]!;
      if (sa[k] !== 1) ia += c * sta[k]!;
      if (sb[k] !== 1) ib += c * stb[k]!;
    }
    out[i] = f(a.data[ia]!, b.data[ib]!);
  }
  return { shape, data: out };
}

export const map = (a: ND, f: (x: number) => number): ND => ({ shape: a.shape, data: a.data.map(f) });

export function transposeRef(a: ND, perm: number[]): ND {
  const shape = perm.map((p) => a.shape[p]!);
  const out = new Float64Array(a.data.length);
  const st = strides(shape);
  const sa = strides(a.shape);
  for (let i = 0; i < out.length; i++) {
    let src = 0;
    for (let k = 0; k < shape.length; k++) src += (Math.floor(i / st[k]!) % shape[k]!) * sa[perm[k]!]!;
    out[i] = a.data[src]!;
  }
  return { shape, data: out };
}

/** Batched matmul over the last two axes with broadcasting batch axes. */
export function matmulRef(a: ND, b: ND, transA = false, transB = false): ND {
  const swap = (x: ND) => {
    const r = x.shape.length;
    const perm = [...Array(r).keys()];
    [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
    return transposeRef(x, perm);
  };
  const A = transA ? swap(a) : a;
  const B = transB ? swap(b) : b;
  const [m, k] = A.shape.slice(-2) as [number, number];
  const n = B.shape.at(-1)!;
  const ba = A.shape.slice(0, -2);
  const bb = B.shape.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const pa = [...new Array(rank - ba.length).fill(1), ...ba];
  const pb = [...new Array(rank - bb.length).fill(1), ...bb];
  const batch = pa.map((d, i) => Math.max(d, pb[i]!));
  const nb = size(batch);
  const out = new Float64Array(nb * m * n);
  const stBatch = strides(batch);
  const stA = strides(pa);
  const stB = strides(pb);
  for (let bi = 0; bi < nb; bi++) {
    let oa = 0;
    let ob = 0;
    for (let d = 0; d < rank; d++) {
      const c = Math.floor(bi / stBatch[d]!) % batch[d]!;
      if (pa[d] !== 1) oa += c * stA[d]!;
      if (pb[d] !== 1) ob += c * stB[d]!;
    }
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += A.data[(oa * m + i) * k + t]! * B.data[(ob * k + t) * n + j]!;
        out[(bi * m + i) * n + j] = s;
      }
  }
  return { shape: [...batch, m, n], data: out };
}

/** Applies f to every row along the last axis. */
export function rowsRef(a: ND, f: (row: Float64Array) => Float64Array | number[]): ND {
  const n = a.shape.at(-1)!;
  const out = new Float64Array(a.data.length);
  for (let r = 0; r < a.data.length / n; r++) out.set(f(a.data.subarray(r * n, (r + 1) * n)), r * n);
  return { shape: a.shape, data: out };
}

export function softmaxRow(row: Float64Array): Float64Array {
  const m = Math.max(...row);
  const e = row.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** Reduction over one axis. */
export function reduceRef(a: ND, axis: number, f: (vals: number[]) => number, keepdims = false): ND {
  const shape = [...a.shape];
  const len = shape[axis]!;
  const outer = size(shape.slice(0, axis));
  const inner = size(shape.slice(axis + 1));
  const out = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++)
    for (let i = 0; i < inner; i++) {
      const vals: number[] = [];
      for (let k = 0; k < len; k++) vals.push(a.data[(o * len + k) * inner + i]!);
      out[o * inner + i] = f(vals);
    }
  if (keepdims) shape[axis] = 1;
  else shape.splice(axis, 1);
  return { shape, data: out };
}

/** Reference attention, [B,H,S,D] layout, GQA by ⌊h / rep⌋, causal with offset Sk − Sq. */
export function attentionRef(q: ND, k: ND, v: ND, causal: boolean, mask?: ND): ND {
  const [B, Hq, Sq, D] = q.shape as [number, number, number, number];
  const [, Hkv, Sk] = k.shape as [number, number, number];
  const Dv = v.shape[3]!;
  const rep = Hq / Hkv;
  const scale = 1 / Math.sqrt(D);
  const out = new Float64Array(B * Hq * Sq * Dv);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / rep);
      for (let i = 0; i < Sq; i++) {
        const s = new Float64Array(Sk);
        for (let j = 0; j < Sk; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++)
            dot += q.data[((b * Hq + h) * Sq + i) * D + d]! * k.data[((b * Hkv + kh) * Sk + j) * D + d]!;
          s[j] = dot * scale;
          if (causal && j > i + (Sk - Sq)) s[j] = -Infinity;
          if (mask) s[j] += mask.data[(b * mask.shape[2]! + (mask.shape[2] === 1 ? 0 : i)) * Sk + j]!;
        }
        const p = softmaxRow(s);
        for (let d = 0; d < Dv; d++) {
          let acc = 0;
          for (let j = 0; j < Sk; j++) acc += p[j]! * v.data[((b * Hkv + kh) * Sk + j) * Dv + d]!;
          out[((b * Hq + h) * Sq + i) * Dv + d] = acc;
        }
      }
    }
  return { shape: [B, Hq, Sq, Dv], data: out };
}

export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}
