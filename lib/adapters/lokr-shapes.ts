/**
 * The factor shapes HF PEFT's LoKr (and LyCORIS) give a Linear layer, reproduced exactly so KronA plans
 * and parameter counts match what a PEFT user gets (peft/tuners/lokr/layer.py, `factorization` and
 * `update_layer`).
 */

/**
 * PEFT's `factorization(dimension, factor)`, line for line:
 * - factor > 0 dividing dim returns (factor, dim/factor) **unsorted** (so factorization(1024, 64) is
 *   (64, 16); only the search branch below sorts);
 * - factor == -1 means "as close to √dim as possible";
 * - otherwise step m up through the divisors while m ≤ factor and m < n, then return (min, max).
 * PEFT compares m + n with the *initial* 1 + dim, which never stops the search; kept for fidelity.
 */
export function peftFactorization(dim: number, factor = -1): [number, number] {
  if (factor > 0 && dim % factor === 0) return [factor, dim / factor];
  if (factor === -1) factor = dim;
  let m = 1;
  let n = dim;
  const length = m + n;
  while (m < n) {
    let newM = m + 1;
    while (dim % newM !== 0) newM++;
    const newN = dim / newM;
    if (newM + newN > length || newM > factor) break;
    m = newM;
    n = newN;
  }
  return m > n ? [n, m] : [m, n];
}

/** A factor's rank when it is stored as a product (u×r)·(r×v); null when it is a dense matrix. */
export interface LokrFactors {
  /** w1: out_l × in_m, the small left factor of kron(w1, w2). */
  w1: [number, number];
  /** w2: out_k × in_n, the large right factor. */
  w2: [number, number];
  w1Rank: number | null;
  w2Rank: number | null;
}

export interface LokrShapeOptions {
  /** PEFT `decompose_factor`; −1 means near √dim. */
  decomposeFactor: number;
  /** PEFT `r`; when undefined both factors are dense (plain KronA). */
  r?: number | undefined;
  /** PEFT `decompose_both`: also low-rank w1 when r < max(out_l, in_m)/2. */
  decomposeBoth?: boolean | undefined;
}

/**
 * Factor shapes for Linear(in, out): (in_m, in_n) = factorization(in, f), (out_l, out_k) =
 * factorization(out, f), w1 = out_l×in_m, w2 = out_k×in_n. With r set, w2 is stored low-rank iff
 * r < max(out_k, in_n)/2 and w1 iff decompose_both and r < max(out_l, in_m)/2 — PEFT's `use_w1`/`use_w2`.
 */
export function lokrFactors(out: number, inn: number, opts: LokrShapeOptions): LokrFactors {
  const [inM, inN] = peftFactorization(inn, opts.decomposeFactor);
  const [outL, outK] = peftFactorization(out, opts.decomposeFactor);
  const r = opts.r;
  const w1LowRank = r !== undefined && Boolean(opts.decomposeBoth) && r < Math.max(outL, inM) / 2;
  const w2LowRank = r !== undefined && r < Math.max(outK, inN) / 2;
  return {
    w1: [outL, inM],
    w2: [outK, inN],
    w1Rank: w1LowRank ? r! : null,
    w2Rank: w2LowRank ? r! : null,
  };
}

/** Trainable parameters of the LoKr factors: dense u·v, or r·(u + v) when stored low-rank. */
export function lokrParamCount(f: LokrFactors): number {
  const size = ([u, v]: [number, number], rank: number | null) => (rank === null ? u * v : rank * (u + v));
  return size(f.w1, f.w1Rank) + size(f.w2, f.w2Rank);
}

/** rank(kron(w1, w2)) ≤ rank(w1)·rank(w2), each capped by its shape and its low-rank r. */
export function lokrMaxRank(f: LokrFactors): number {
  const rank = ([u, v]: [number, number], r: number | null) => Math.min(u, v, r ?? Infinity);
  return rank(f.w1, f.w1Rank) * rank(f.w2, f.w2Rank);
}
