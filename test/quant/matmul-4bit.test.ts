/**
 * moka's NF4 generation kernel, ai.moka MatMul4bit (native/matmul-4bit.cc), run by sessions of moka's native
 * addon (lib/engine/native-session.ts):
 *   - the addon is built and loads (`npm test` builds it first; a missing compiler fails here, loudly);
 *   - a product with few rows runs MatMul4bit, one with more rows Dequantize4bit and a Gemm (with native
 *     kernels off: MatMulBnb4); Dequantize4bit gives bit for bit the float32 decode;
 *   - its result equals x·deq(W)ᵀ computed in float64 (rel < 1e-5: float32 summation order only) and
 *     MatMulBnb4's (rel < 1e-5), for whole and partial blocks, odd element counts, 1 to MATMUL_4BIT_MAX_ROWS rows;
 *   - sessions run concurrently give the same bytes as one after another;
 *   - a whole NF4 LLaMA gives the same greedy tokens with and without it, and the same scores (abs < 1e-4);
 *   - a model ONNX Runtime rejects is an error with its message, not a crash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import onnxProto from 'onnx-proto';
import { Graph, Session, grad, mul, reduceSum } from '../../lib/engine/index.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import {
  NativeSession,
  nativeKernels,
  nativeKernelsUnavailableReason,
} from '../../lib/engine/native-session.ts';
import { generateTokens } from '../../lib/model/generation.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { scoreTokens } from '../../lib/model/scoring.ts';
import type { FrozenBase } from '../../lib/quant/frozen-base.ts';
import { quantizeNf4, type Nf4Weight } from '../../lib/quant/nf4.ts';
import {
  MATMUL_4BIT_MAX_ROWS,
  quantizedLinear,
  quantizedWeightTensors,
} from '../../lib/quant/quantized-linear.ts';
import { dequantizeToFloat32 } from '../../lib/quant/quantized-weight.ts';
import { maxRelativeError } from '../model/reference-llama.ts';
import { openTinyNf4Base, type TinyNf4Base } from '../helpers/tiny-nf4-base.ts';

const { onnx } = onnxProto;
const rand = seededRandom(41);

it('the native addon is built and loads', () => {
  expect(nativeKernelsUnavailableReason()).toBeNull();
  expect(nativeKernels()).not.toBeNull();
});

function opsOf(model: Uint8Array): string[] {
  return onnx.ModelProto.decode(model).graph!.node!.map((n) => `${n.domain || ''}.${n.opType}`);
}

/** y = x·deq(W)ᵀ through the engine, with moka's kernels allowed or not; also returns the ops used. */
async function product(w: Nf4Weight, x: Float32Array, rows: number, native: boolean) {
  const [n, k] = w.shape as [number, number];
  const g = new Graph('q');
  const xt = g.input('x', 'float32', [rows, k]);
  const y = quantizedLinear(xt, quantizedWeightTensors(g, 'w', w));
  const s = new Session(g, { inputs: [xt], outputs: { y } }, { nativeKernels: native });
  try {
    const ops = opsOf(s.emit(new Map(), native).model);
    const out = await s.run({ x });
    expect(out.y!.dims).toEqual([rows, n]);
    return { y: out.y!.data as Float32Array, ops };
  } finally {
    await s.release();
  }
}

function reference(w: Nf4Weight, x: Float32Array, rows: number): Float64Array {
  const [n, k] = w.shape as [number, number];
  const deq = dequantizeToFloat32(w);
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < n; o++) {
      let acc = 0;
      for (let i = 0; i < k; i++) acc += x[r * k + i]! * deq[o * k + i]!;
      y[r * n + o] = acc;
    }
  return y;
}

const CASES: [string, number, number, { blockSize: number; doubleQuant?: boolean }, number][] = [
  ['one row, block 64, double quant', 96, 256, { blockSize: 64, doubleQuant: true }, 1],
  ['3 rows, block 64', 40, 128, { blockSize: 64 }, 3],
  ['rows at the limit, block 32', 33, 64, { blockSize: 32 }, MATMUL_4BIT_MAX_ROWS],
  ['K not a multiple of the block (blocks straddle rows)', 7, 96, { blockSize: 64 }, 2],
  ['odd element count, partial last block', 5, 27, { blockSize: 32, doubleQuant: true }, 4],
  ['block 128, K 200: blocks straddle rows, partial last block', 3, 201, { blockSize: 128 }, 5],
];

describe.each(CASES)('MatMul4bit: %s', (_name, n, k, opts, rows) => {
  const w = quantizeNf4(Float32Array.from(randomNormal(n * k, rand, 0.2)), [n, k], opts);
  const x = Float32Array.from(randomNormal(rows * k, rand));

  it('runs MatMul4bit and equals x·deq(W)ᵀ in float64 and MatMulBnb4 (rel < 1e-5)', async () => {
    const native = await product(w, x, rows, true);
    expect(native.ops).toContain('ai.moka.MatMul4bit');
    expect(native.ops.filter((o) => o.startsWith('com.microsoft'))).toEqual([]);
    expect(maxRelativeError(native.y, reference(w, x, rows))).toBeLessThan(1e-5);
    const ort = await product(w, x, rows, false);
    expect(ort.ops).not.toContain('ai.moka.MatMul4bit');
    expect(maxRelativeError(native.y, ort.y)).toBeLessThan(1e-5);
  });
});

describe('MatMul4bit: where it is used', () => {
  it('more rows than MATMUL_4BIT_MAX_ROWS: Dequantize4bit and a Gemm (native) or MatMulBnb4, both exact', async () => {
    const w = quantizeNf4(Float32Array.from(randomNormal(48 * 192, rand, 0.2)), [48, 192], {
      blockSize: 64,
      doubleQuant: true,
    });
    const rows = MATMUL_4BIT_MAX_ROWS + 1;
    const x = Float32Array.from(randomNormal(rows * 192, rand));
    const native = await product(w, x, rows, true);
    expect(native.ops).toContain('ai.moka.Dequantize4bit');
    expect(native.ops).toContain('.Gemm');
    expect(native.ops).not.toContain('ai.moka.MatMul4bit');
    expect(maxRelativeError(native.y, reference(w, x, rows))).toBeLessThan(1e-5);
    const ort = await product(w, x, rows, false);
    expect(ort.ops).toContain('com.microsoft.MatMulBnb4');
    expect(maxRelativeError(ort.y, reference(w, x, rows))).toBeLessThan(1e-5);
  });

  it('Dequantize4bit gives bit for bit the float32 decode, whole or partial blocks', async () => {
    for (const [n, k, blockSize] of [
      [40, 256, 64],
      [5, 27, 32],
      [3, 201, 128],
    ] as const) {
      const w = quantizeNf4(Float32Array.from(randomNormal(n * k, rand, 0.2)), [n, k], { blockSize });
      // deq(W) itself: the product with the identity, as the backward's dY · W sees it (dY = I).
      const g = new Graph('deq');
      const gy = g.input('gy', 'float32', [n, n]);
      const q = quantizedWeightTensors(g, 'w', w);
      const x = g.input('x', 'float32', [n, k]);
      const y = quantizedLinear(x, q);
      const [dx] = grad(reduceSum(mul(y, gy)), [x]);
      const s = new Session(g, { inputs: [x, gy], outputs: { dx: dx! } }, { nativeKernels: true });
      try {
        expect(opsOf(s.emit(new Map(), true).model)).toContain('ai.moka.Dequantize4bit');
        const eye = new Float32Array(n * n);
        for (let i = 0; i < n; i++) eye[i * n + i] = 1;
        const out = await s.run({ x: new Float32Array(n * k), gy: eye });
        expect(Buffer.from((out.dx!.data as Float32Array).buffer)).toEqual(
          Buffer.from(dequantizeToFloat32(w).buffer),
        );
      } finally {
        await s.release();
      }
    }
  });

  it('sessions run at once give the same bytes as run one after another', async () => {
    const w = quantizeNf4(Float32Array.from(randomNormal(512 * 256, rand, 0.2)), [512, 256], {
      blockSize: 64,
    });
    const xs = [1, 2, 3, 4].map(() => Float32Array.from(randomNormal(256, rand)));
    const g = new Graph('q');
    const xt = g.input('x', 'float32', [1, 256]);
    const s = new Session(g, {
      inputs: [xt],
      outputs: { y: quantizedLinear(xt, quantizedWeightTensors(g, 'w', w)) },
    });
    try {
      const alone: Float32Array[] = [];
      for (const x of xs) alone.push((await s.run({ x })).y!.data as Float32Array);
      const together = await Promise.all(xs.map((x) => s.run({ x })));
      together.forEach((out, i) =>
        expect(Buffer.from((out.y!.data as Float32Array).buffer)).toEqual(Buffer.from(alone[i]!.buffer)),
      );
    } finally {
      await s.release();
    }
  });

  it('a model ONNX Runtime rejects is an error with its message', async () => {
    await expect(
      NativeSession.create(new Uint8Array([1, 2, 3, 4]), {
        graphOptimizationLevel: 99,
        logSeverityLevel: 4,
        memArena: 1,
        config: [],
      }),
    ).rejects.toThrow(/protobuf|parse|model/i);
  });
});

describe('MatMul4bit in a whole NF4 LLaMA', () => {
  let tiny: TinyNf4Base;
  let base: FrozenBase;
  beforeAll(async () => {
    tiny = await openTinyNf4Base('moka-matmul4bit-', { seed: 12, hiddenSize: 64, intermediateSize: 128 });
    base = tiny.base;
  });
  afterAll(() => tiny?.close());

  const modelOf = (nativeKernels: boolean) =>
    LlamaModel.fromParts(base.checkpoint, base.weights, { hooks: { base: base.base! }, nativeKernels });

  it('greedy generation gives the same tokens, and scores agree (abs < 1e-4)', async () => {
    const withKernel = modelOf(true);
    const without = modelOf(false);
    const prompt = [1, 45, 300, 12, 7, 99];
    const a = await generateTokens(withKernel, prompt, { maxNewTokens: 12, eosIds: [] });
    const b = await generateTokens(without, prompt, { maxNewTokens: 12, eosIds: [] });
    expect(a.tokens).toEqual(b.tokens);
    const requests = [
      { context: [1, 5, 9, 200], continuation: [31, 8] },
      { context: [1, 77], continuation: [4, 5, 6] },
    ];
    const sa = await scoreTokens(withKernel, requests);
    const sb = await scoreTokens(without, requests);
    sa.forEach((r, i) => {
      expect(Math.abs(r.loglik - sb[i]!.loglik)).toBeLessThan(1e-4);
      expect(r.isGreedy).toBe(sb[i]!.isGreedy);
    });
  });
});
