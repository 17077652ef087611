/**
 * A plain TypeScript LLaMA forward in float64 (loops over Float64Array, no ORT), written from the Hugging Face
 * definition independently of lib/model/llama-graph.ts, to check the ORT graph against. One sequence at a time,
 * positions 0..n−1, no padding.
 */
import type { Checkpoint } from '../../lib/model/checkpoint.ts';
import type { LlamaConfig } from '../../lib/model/config.ts';

export interface ReferenceWeights {
  config: LlamaConfig;
  get(name: string): Float64Array;
}

export async function referenceWeights(ckpt: Checkpoint): Promise<ReferenceWeights> {
  const all = new Map<string, Float64Array>();
  for (const name of ckpt.tensorNames()) all.set(name, Float64Array.from(await ckpt.readFloat32(name)));
  return {
    config: ckpt.config,
    get(name) {
      const w = all.get(name);
      if (!w) throw new Error(`reference: no tensor ${name}`);
      return w;
    },
  };
}

/** θ^(−2i/d), with Llama 3 rescaling, in float64 (eval-protocols.md §1). */
export function referenceInvFreq(cfg: LlamaConfig): Float64Array {
  const d = cfg.headDim;
  const inv = new Float64Array(d / 2);
  for (let i = 0; i < d / 2; i++) {
    const base = Math.pow(cfg.ropeTheta, -(2 * i) / d);
    const s = cfg.ropeScaling;
    if (!s) {
      inv[i] = base;
      continue;
    }
    const L = s.originalMaxPositionEmbeddings;
    const lowW = L / s.lowFreqFactor;
    const highW = L / s.highFreqFactor;
    const lambda = (2 * Math.PI) / base;
    if (lambda > lowW) inv[i] = base / s.factor;
    else if (lambda < highW) inv[i] = base;
    else {
      const sm = (L / lambda - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      inv[i] = ((1 - sm) * base) / s.factor + sm * base;
    }
  }
  return inv;
}

function rmsnorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]!);
}

/** y = W·x for W [out, in] row-major. */
function matvec(w: Float64Array, x: Float64Array, out: number): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[o * n + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

/** rotate_half RoPE on one head vector in place: pairs (i, i + d/2). */
function ropeInPlace(v: Float64Array, off: number, d: number, pos: number, inv: Float64Array): void {
  const h = d / 2;
  for (let i = 0; i < h; i++) {
    const a = pos * inv[i]!;
    const c = Math.cos(a);
    const s = Math.sin(a);
    const x1 = v[off + i]!;
    const x2 = v[off + i + h]!;
    v[off + i] = x1 * c - x2 * s;
    v[off + i + h] = x2 * c + x1 * s;
  }
}

/** Logits [n, vocab] of one sequence. */
export function referenceForward(w: ReferenceWeights, tokens: readonly number[]): Float64Array {
  const c = w.config;
  const H = c.hiddenSize;
  const D = c.headDim;
  const n = tokens.length;
  const inv = referenceInvFreq(c);
  const embed = w.get('model.embed_tokens.weight');
  let xs = tokens.map((t) => embed.slice(t * H, (t + 1) * H));
  const rep = c.numHeads / c.numKvHeads;
  for (let l = 0; l < c.numLayers; l++) {
    const p = (name: string) => w.get(`model.layers.${l}.${name}.weight`);
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    xs.forEach((x, t) => {
      const h = rmsnorm(x, p('input_layernorm'), c.rmsNormEps);
      const q = matvec(p('self_attn.q_proj'), h, c.numHeads * D);
      const k = matvec(p('self_attn.k_proj'), h, c.numKvHeads * D);
      for (let hd = 0; hd < c.numHeads; hd++) ropeInPlace(q, hd * D, D, t, inv);
      for (let hd = 0; hd < c.numKvHeads; hd++) ropeInPlace(k, hd * D, D, t, inv);
      qs.push(q);
      ks.push(k);
      vs.push(matvec(p('self_attn.v_proj'), h, c.numKvHeads * D));
    });
    xs = xs.map((x, t) => {
      const attn = new Float64Array(c.numHeads * D);
      for (let hd = 0; hd < c.numHeads; hd++) {
        const kv = Math.floor(hd / rep);
        const scores = new Float64Array(t + 1);
        for (let j = 0; j <= t; j++) {
          let s = 0;
          for (let i = 0; i < D; i++) s += qs[t]![hd * D + i]! * ks[j]![kv * D + i]!;
          scores[j] = s / Math.sqrt(D);
        }
        const m = Math.max(...scores);
        let z = 0;
        for (let j = 0; j <= t; j++) z += scores[j] = Math.exp(scores[j]! - m);
        for (let j = 0; j <= t; j++) {
          for (let i = 0; i < D; i++) attn[hd * D + i] += (scores[j]! / z) * vs[j]![kv * D + i]!;
        }
      }
      const o = matvec(p('self_attn.o_proj'), attn, H);
      const h = x.map((v, i) => v + o[i]!);
      const m = rmsnorm(h, p('post_attention_layernorm'), c.rmsNormEps);
      const gate = matvec(p('mlp.gate_proj'), m, c.intermediateSize);
      const up = matvec(p('mlp.up_proj'), m, c.intermediateSize);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
      const down = matvec(p('mlp.down_proj'), act, H);
      return h.map((v, i) => v + down[i]!);
    });
  }
  const head = c.tieWordEmbeddings ? embed : w.get('lm_head.weight');
  const out = new Float64Array(n * c.vocabSize);
  xs.forEach((x, t) =>
    out.set(matvec(head, rmsnorm(x, w.get('model.norm.weight'), c.rmsNormEps), c.vocabSize), t * c.vocabSize),
  );
  return out;
}

/** max |a − b| / max |b|: the logit error relative to the logits' scale (per-element ratios blow up near 0). */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / scale;
}
