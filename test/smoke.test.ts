// Foundation smoke test: onnxruntime-node loads, and a graph encoded from TypeScript runs on the CPU provider.
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

function matmulAddModel(): Uint8Array {
  const f32 = onnx.TensorProto.DataType.FLOAT;
  const valueInfo = (name: string, dims: number[]) => ({
    name,
    type: { tensorType: { elemType: f32, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
  const model = onnx.ModelProto.create({
    irVersion: 10,
    opsetImport: [{ domain: '', version: 21 }],
    producerName: 'moka-smoke',
    graph: {
      name: 'smoke',
      node: [
        { opType: 'MatMul', input: ['x', 'w'], output: ['xw'] },
        { opType: 'Add', input: ['xw', 'b'], output: ['y'] },
      ],
      input: [valueInfo('x', [2, 3]), valueInfo('w', [3, 2]), valueInfo('b', [2])],
      output: [valueInfo('y', [2, 2])],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

describe('onnxruntime-node on the CPU provider', () => {
  it('runs a MatMul+Add graph built in TypeScript and returns the exact result', async () => {
    const session = await ort.InferenceSession.create(matmulAddModel(), { executionProviders: ['cpu'] });
    const x = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
    const w = new ort.Tensor('float32', Float32Array.from([1, 0, 0, 1, 1, 1]), [3, 2]);
    const b = new ort.Tensor('float32', Float32Array.from([10, 20]), [2]);
    const out = await session.run({ x, w, b });
    // Small integers: float32 arithmetic is exact here.
    expect(Array.from(out.y.data as Float32Array)).toEqual([14, 25, 20, 31]);
    expect(out.y.dims).toEqual([2, 2]);
    await session.release();
  });
});
