// Pins the int4 byte layouts against ONNX Runtime itself: a com.microsoft MatMulNBits node fed our B / scales /
// zero points must compute x · deq(W)ᵀ, and DequantizeLinear-21 fed our INT4/UINT4 conversion must give deq(W).
// Tolerance 1e-5 relative to max |y|: ORT accumulates the K-long dot products in float32 in its own order
// (≈ K · 2^-24 ≈ 5e-6 for K = 80), while the reference is float64 over the same dequantized float32 weights.
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { dequantizeInt4, matMulNBitsSpec, quantizeInt4, type Int4Weight } from '../../lib/quant/int4.ts';
import { toDequantizeLinearInt4 } from '../../lib/quant/int4-dequantize-linear.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';

const { onnx } = onnxProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const UINT8 = onnx.TensorProto.DataType.UINT8;

function valueInfo(name: string, dims: number[]) {
  return {
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  };
}

function initializer(name: string, dataType: number, dims: number[], bytes: Uint8Array) {
  return { name, dataType, dims, rawData: bytes };
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function encode(graph: Record<string, unknown>): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 10,
    opsetImport: [
      { domain: '', version: 21 },
      { domain: 'com.microsoft', version: 1 },
    ],
    producerName: 'moka-quant-test',
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}

function matMulNBitsModel(w: Int4Weight, m: number): Uint8Array {
  const spec = matMulNBitsSpec(w);
  const inputs = ['x', 'B', 'scales'];
  const inits = [
    initializer('B', UINT8, spec.bDims, w.packed),
    initializer('scales', FLOAT, spec.scalesDims, f32Bytes(w.scales)),
  ];
  if (w.zeroPoints) {
    inputs.push('zero_points');
    inits.push(initializer('zero_points', UINT8, spec.zeroPointsDims!, w.zeroPoints));
  }
  const attribute = Object.entries(spec.attributes).map(([name, i]) => ({
    name,
    type: onnx.AttributeProto.AttributeType.INT,
    i,
  }));
  return encode({
    name: 'matmulnbits',
    node: [{ opType: 'MatMulNBits', domain: 'com.microsoft', input: inputs, output: ['y'], attribute }],
    initializer: inits,
    input: [valueInfo('x', [m, w.k])],
    output: [valueInfo('y', [m, w.n])],
  });
}

function dequantizeLinearModel(w: Int4Weight): Uint8Array {
  const dq = toDequantizeLinearInt4(w);
  const inits = [
    initializer('W_q', dq.dataType, dq.dims, dq.data),
    initializer('W_scale', FLOAT, dq.scaleDims, f32Bytes(dq.scale)),
  ];
  const inputs = ['W_q', 'W_scale'];
  if (dq.zeroPoint) {
    inputs.push('W_zp');
    inits.push(initializer('W_zp', dq.dataType, dq.scaleDims, dq.zeroPoint));
  }
  const INT = onnx.AttributeProto.AttributeType.INT;
  return encode({
    name: 'dq21',
    node: [
      {
        opType: 'DequantizeLinear',
        input: inputs,
        output: ['w'],
        attribute: [
          { name: 'axis', type: INT, i: dq.axis },
          { name: 'block_size', type: INT, i: dq.blockSize },
        ],
      },
    ],
    initializer: inits,
    input: [],
    output: [valueInfo('w', dq.dims)],
  });
}

/** x · deq(W)ᵀ in float64. */
function reference(x: Float32Array, deq: Float32Array, m: number, n: number, k: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += x[i * k + t]! * deq[j * k + t]!;
      y[i * n + j] = s;
    }
  }
  return y;
}

const M = 5;
const N = 24;
// K = 80 with block 32 leaves a partial last block (16 of 32) and an odd block count (3): both paddings matter.
const K = 80;

describe('int4 layout against ONNX Runtime (CPU)', () => {
  const wValues = fillNormal(new Float32Array(N * K), mulberry32(21));
  const x = fillNormal(new Float32Array(M * K), mulberry32(22));

  it.each([
    ['asymmetric', false, 32],
    ['symmetric', true, 32],
    ['asymmetric, block 16', false, 16],
  ])('MatMulNBits (accuracy_level 0) computes x · deq(W)ᵀ, %s', async (_label, symmetric, blockSize) => {
    const w = quantizeInt4(wValues, [N, K], { blockSize, symmetric });
    const session = await ort.InferenceSession.create(matMulNBitsModel(w, M), {
      executionProviders: ['cpu'],
    });
    try {
      const out = await session.run({ x: new ort.Tensor('float32', x, [M, K]) });
      const y = out.y!.data as Float32Array;
      expect(out.y!.dims).toEqual([M, N]);
      const ref = reference(x, dequantizeInt4(w), M, N, K);
      const scale = Math.max(...Array.from(ref, Math.abs));
      let maxErr = 0;
      for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(y[i]! - ref[i]!));
      expect(maxErr / scale).toBeLessThan(1e-5);
    } finally {
      await session.release();
    }
  });

  it.each([
    ['INT4 (symmetric)', true],
    ['UINT4 + zero points (asymmetric)', false],
  ])('DequantizeLinear-21 blocked on axis 1 reproduces deq(W): %s', async (_label, symmetric) => {
    const w = quantizeInt4(wValues, [N, K], { blockSize: 32, symmetric });
    const session = await ort.InferenceSession.create(dequantizeLinearModel(w), {
      executionProviders: ['cpu'],
    });
    try {
      const out = await session.run({});
      const got = out.w!.data as Float32Array;
      const want = dequantizeInt4(w);
      // (q − zp) · scale is a single float32 multiply of exact operands on both sides.
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(1e-6);
    } finally {
      await session.release();
    }
  });
});
