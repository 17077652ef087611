/**
 * The NF4 generation kernel at LLaMA-2-7B widths (issue #11: NF4 generation per token ≤ 2× int4's): one
 * product y = x·deq(W)ᵀ with 1 row (a decode step) and MATMUL_4BIT_MAX_ROWS rows (the most it takes), on
 *   - moka's ai.moka MatMul4bit (native/matmul-4bit.cc, run by the native addon's session),
 *   - ONNX Runtime's com.microsoft MatMulBnb4 (the same NF4 weight; decodes it whole into memory each call),
 *   - ONNX Runtime's com.microsoft MatMulNBits on the int4 quantization of the same weight (the reference
 *     4-bit speed),
 * timed alternately in one process (median of rounds). Ratios are stated so that > 1 favours MatMul4bit.
 */
import { Graph, Session, type Tensor } from '../lib/engine/index.ts';
import { nativeKernelsUnavailableReason } from '../lib/engine/native-session.ts';
import { quantizeInt4 } from '../lib/quant/int4.ts';
import { quantizeNf4 } from '../lib/quant/nf4.ts';
import {
  MATMUL_4BIT_MAX_ROWS,
  quantizedLinear,
  quantizedWeightTensors,
} from '../lib/quant/quantized-linear.ts';
import type { QuantizedWeight } from '../lib/quant/quantized-weight.ts';
import { medianMs, randomFloat32, round, type BenchEntry, type Suite } from './harness.ts';

/** [out features, in features] of LLaMA-2-7B's projections: q/k/v/o, gate/up, down. */
const SHAPES: [number, number][] = [
  [4096, 4096],
  [11008, 4096],
  [4096, 11008],
];

function productSession(w: QuantizedWeight, k: number, rows: number, native: boolean) {
  const g = new Graph('product');
  const x: Tensor = g.input('x', 'float32', [rows, k]);
  const y = quantizedLinear(x, quantizedWeightTensors(g, 'w', w));
  return new Session(g, { inputs: [x], outputs: { y } }, { nativeKernels: native });
}

async function timeShape(n: number, k: number): Promise<BenchEntry[]> {
  const weight = randomFloat32(n * k, n + k).map((v) => v * 0.05);
  const nf4 = quantizeNf4(weight, [n, k], { blockSize: 64, doubleQuant: true });
  const int4 = quantizeInt4(weight, [n, k], { blockSize: 64 });
  const entries: BenchEntry[] = [];
  for (const rows of [1, MATMUL_4BIT_MAX_ROWS]) {
    const x = randomFloat32(rows * k, rows);
    const sessions = {
      kernel: productSession(nf4, k, rows, true),
      bnb4: productSession(nf4, k, rows, false),
      int4: productSession(int4, k, rows, false),
    };
    try {
      const times = { kernel: [] as number[], bnb4: [] as number[], int4: [] as number[] };
      for (const s of Object.values(sessions)) await s.run({ x }); // compile and warm up
      for (let round = 0; round < 7; round++) {
        for (const key of ['kernel', 'bnb4', 'int4'] as const) {
          times[key].push(await medianMs(() => sessions[key].run({ x }), 3, 0));
        }
      }
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const [kernel, bnb4, int4Ms] = [med(times.kernel), med(times.bnb4), med(times.int4)];
      const gbps = (n * k) / 2 / 1e9 / (kernel / 1e3);
      entries.push(
        {
          name: `matmul4bit.nf4_vs_bnb4.${rows}x${k}_by_${n}`,
          value: round(kernel),
          unit: 'ms per product',
          baseline: 'com.microsoft MatMulBnb4 on the same NF4 weight (ratio = its time / ours)',
          baselineValue: round(bnb4),
          ratio: round(bnb4 / kernel),
          notes: `ai.moka MatMul4bit, NF4 + double quant block 64, ${round(gbps)} GB/s of packed weight`,
        },
        {
          name: `matmul4bit.nf4_vs_int4.${rows}x${k}_by_${n}`,
          value: round(kernel),
          unit: 'ms per product',
          baseline: 'com.microsoft MatMulNBits on the int4 (block 64) weight (ratio = its time / ours)',
          baselineValue: round(int4Ms),
          ratio: round(int4Ms / kernel),
        },
      );
    } finally {
      for (const s of Object.values(sessions)) await s.release();
    }
  }
  return entries;
}

export const matmul4bitSuite: Suite = {
  name: 'matmul4bit',
  run: async () => {
    const missing = nativeKernelsUnavailableReason();
    if (missing) throw new Error(`the native kernels are not available: ${missing}`);
    const entries: BenchEntry[] = [];
    for (const [n, k] of SHAPES) {
      process.stderr.write(`bench: NF4 product ${n} x ${k} …\n`);
      entries.push(...(await timeShape(n, k)));
    }
    return entries;
  },
};
