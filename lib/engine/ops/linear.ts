/** A linear projection in the PyTorch/HF weight layout: y = x·Wᵀ with W [out, in], x [..., in]. */
import { GraphError, type Tensor } from '../graph.ts';
import { divDims, numel } from '../shape.ts';
import { matmul } from './matmul.ts';
import { reshape } from './shape-ops.ts';

export function linear(x: Tensor, weight: Tensor): Tensor {
  const n = x.shape[x.rank - 1]!;
  if (weight.rank !== 2) throw new GraphError(`linear: weight ${weight} must be [out, in]`);
  const m = weight.shape[0]!;
  if (x.rank === 2) return matmul(x, weight, { transB: true });
  // Flatten the tokens so the product is one 2-D Gemm(transB) over all of them.
  const tokens = divDims(numel(x.shape), n);
  if (tokens === null) throw new GraphError(`linear: cannot flatten ${x}`);
  const y = matmul(reshape(x, [tokens, n]), weight, { transB: true });
  return reshape(y, [...x.shape.slice(0, -1), m]);
}
