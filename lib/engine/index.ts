/** The tensor engine's public surface: build graphs, differentiate them, run them with ONNX Runtime. */
export { Graph, GraphError, Tensor, type OpDef, type WeightData } from './graph.ts';
export type { DType, HostArray } from './dtype.ts';
export { allocHost, isFloat } from './dtype.ts';
export type { Dim, Shape } from './shape.ts';
export { grad } from './autodiff.ts';
export {
  Session,
  cudaProviderInstalled,
  type Feed,
  type ProviderChoice,
  type ProviderName,
  type SessionOptions,
} from './session.ts';
export { emitOnnx, OPSET } from './emit.ts';
export * from './ops/elementwise.ts';
export { reduceSum, reduceMean, reduceMax, dimValue } from './ops/reduce.ts';
export { after, cast, equal, not, where, fill, zeros, stopGradient } from './ops/misc.ts';
export {
  reshape,
  unsqueeze,
  squeeze,
  transpose,
  concat,
  split,
  slice,
  expand,
  gather,
} from './ops/shape-ops.ts';
export { matmul, type MatmulOptions } from './ops/matmul.ts';
export { linear } from './ops/linear.ts';
export { softmax, logSoftmax, crossEntropy, rmsNorm } from './ops/nn.ts';
export { rope, ropeTables } from './ops/rope.ts';
export { dropoutMask, dropoutMaskReference } from './ops/dropout.ts';
export { attention, MASKED_SCORE, type AttentionOptions } from './ops/attention.ts';
