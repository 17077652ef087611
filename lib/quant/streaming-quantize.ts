/**
 * Quantizes one large [rows, cols] weight a block of rows at a time, so memory stays at one block of float32
 * values (≈ 16 MiB) plus the 4-bit result, instead of the whole tensor in full precision (twice, with its
 * 16-bit source). The result is identical to quantizing the whole tensor at once:
 * - NF4 blocks run over the flattened tensor, so each chunk holds a whole number of blocks; double
 *   quantization needs every block's absmax and is applied once all chunks are done;
 * - int4 blocks lie within rows, so rows are independent.
 * The reconstruction error is accumulated per chunk; with NF4 double quantization it depends on the final
 * absmax values, so the rows are read a second time to measure it.
 */
import { doubleQuantizeAbsmax, restoreAbsmax } from './double-quant.ts';
import { quantizeInt4, type Int4Options, type Int4Weight } from './int4.ts';
import { quantizeNf4, type Nf4Options, type Nf4Weight } from './nf4.ts';
import { dequantizeRows, type QuantizedWeight } from './quantized-weight.ts';
import { ErrorAccumulator, type ReconstructionError } from './reconstruction-error.ts';

/** Float32 elements per chunk. */
const CHUNK_ELEMENTS = 4 * 2 ** 20;

export type StreamingOptions = (({ format: 'nf4' } & Nf4Options) | ({ format: 'int4' } & Int4Options)) & {
  /** Float32 elements per chunk (default 4 Mi). */
  chunkElements?: number;
};

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** `readRows(r0, r1)` returns rows [r0, r1) as float32. */
export async function quantizeStreaming(
  readRows: (r0: number, r1: number) => Promise<Float32Array>,
  shape: readonly [number, number],
  opts: StreamingOptions,
): Promise<{ weight: QuantizedWeight; error: ReconstructionError }> {
  const [rows, cols] = shape;
  // NF4 chunks must hold whole blocks: rows·cols a multiple of the block size.
  const step = opts.format === 'nf4' ? (opts.blockSize ?? 64) / gcd(cols, opts.blockSize ?? 64) : 1;
  const chunk = opts.chunkElements ?? CHUNK_ELEMENTS;
  const rowsPerChunk = Math.max(step, Math.floor(chunk / Math.max(cols, 1) / step) * step);
  const acc = new ErrorAccumulator();
  const measure = (orig: Float32Array, w: QuantizedWeight, r0: number, r1: number, rowBase: number) => {
    const deq = new Float32Array((r1 - r0) * cols);
    dequantizeRows(w, deq, r0 - rowBase, r1 - rowBase);
    acc.add(orig, deq);
  };

  let weight: QuantizedWeight;
  if (opts.format === 'nf4') {
    const blockSize = opts.blockSize ?? 64;
    const numel = rows * cols;
    const packed = new Uint8Array(Math.ceil(numel / 2));
    const absmax = new Float32Array(Math.ceil(numel / blockSize));
    let last: Nf4Weight | null = null;
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      const values = await readRows(r0, r1);
      const part = quantizeNf4(values, [r1 - r0, cols], { blockSize, dtype: opts.dtype });
      packed.set(part.packed, (r0 * cols) / 2);
      absmax.set(part.absmax, (r0 * cols) / blockSize);
      if (!opts.doubleQuant) measure(values, part, r0, r1, r0);
      last = part;
    }
    const doubleQuant = opts.doubleQuant ? doubleQuantizeAbsmax(absmax) : null;
    weight = {
      ...last!,
      shape: [rows, cols],
      numel,
      packed,
      absmax: doubleQuant ? restoreAbsmax(doubleQuant) : absmax,
      doubleQuant,
    } satisfies Nf4Weight;
    if (doubleQuant) {
      for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
        const r1 = Math.min(rows, r0 + rowsPerChunk);
        measure(await readRows(r0, r1), weight, r0, r1, 0);
      }
    }
  } else {
    const parts: Int4Weight[] = [];
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      const values = await readRows(r0, r1);
      const part = quantizeInt4(values, [r1 - r0, cols], opts);
      measure(values, part, r0, r1, r0);
      parts.push(part);
    }
    const concat = (
      arrays: (Uint8Array | Float32Array)[],
      make: (n: number) => Uint8Array | Float32Array,
    ) => {
      const out = make(arrays.reduce((s, a) => s + a.length, 0));
      let o = 0;
      for (const a of arrays) {
        out.set(a as never, o);
        o += a.length;
      }
      return out;
    };
    weight = {
      ...parts[0]!,
      n: rows,
      packed: concat(
        parts.map((p) => p.packed),
        (n) => new Uint8Array(n),
      ) as Uint8Array,
      scales: concat(
        parts.map((p) => p.scales),
        (n) => new Float32Array(n),
      ) as Float32Array,
      zeroPoints: parts[0]!.zeroPoints
        ? (concat(
            parts.map((p) => p.zeroPoints!),
            (n) => new Uint8Array(n),
          ) as Uint8Array)
        : null,
    } satisfies Int4Weight;
  }
  return { weight, error: acc.result() };
}
