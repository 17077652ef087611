/**
 * The projection hook: every linear projection of a decoder layer (q, k, v, o, gate, up, down) is built here,
 * so other parts of moka can change how it is computed without touching the model graph:
 *
 * - `base` supplies the frozen projection x ↦ x·Wᵀ (lib/quant/frozen-base.ts returns the 4-bit path). When it is
 *   absent or returns undefined, the float32 weight of the checkpoint and the engine's `linear` are used.
 * - `wrap` computes the layer's output from x and that base function (lib/adapters adds its update,
 *   e.g. base(x) + Δ(x)). When absent, the output is base(x).
 *
 * Hooks run once per projection per graph the model builds (scoring, prefill and each decode graph are
 * separate graphs), so they must create any tensors they need on `graph` / `x.graph`, never reuse tensors of
 * another graph. Graph inputs they create (e.g. trainable adapter factors) are fed through the model's
 * `feeds` option.
 */
import { GraphError, linear, type Graph, type Tensor } from '../engine/index.ts';
import type { ProjectionName } from './config.ts';
import type { WeightSource } from './model-weights.ts';

export interface ProjectionContext {
  layer: number;
  proj: ProjectionName;
  /** HF tensor name of the projection's weight, e.g. `model.layers.3.self_attn.q_proj.weight`. */
  weightName: string;
  outFeatures: number;
  inFeatures: number;
}

export interface ProjectionHooks {
  /** Supplies the frozen base projection as a function x -> x·Wᵀ (lib/quant/frozen-base.ts returns the 4-bit path). Default: float32 weight + engine `linear`. */
  base?: (ctx: ProjectionContext, graph: Graph) => ((x: Tensor) => Tensor) | undefined;
  /** Wraps the projection (lib/adapters adds its update): receives x and the base function, returns y. Default: base(x). */
  wrap?: (ctx: ProjectionContext, x: Tensor, base: (x: Tensor) => Tensor) => Tensor;
}

/** The projection of `ctx` in `graph` as a function of its input [..., inFeatures] → [..., outFeatures]. */
export function buildProjection(
  graph: Graph,
  ctx: ProjectionContext,
  weights: WeightSource,
  hooks: ProjectionHooks = {},
): (x: Tensor) => Tensor {
  let base = hooks.base?.(ctx, graph);
  if (!base) {
    const w = weights.tensor(graph, ctx.weightName);
    base = (x: Tensor) => linear(x, w);
  }
  const baseFn = base;
  const wrap = hooks.wrap;
  return (x: Tensor) => {
    const y = wrap ? wrap(ctx, x, baseFn) : baseFn(x);
    // A hook returning the wrong width would otherwise fail later, in an op that knows nothing about it.
    if (y.graph !== graph || y.shape[y.rank - 1] !== ctx.outFeatures) {
      throw new GraphError(
        `projection ${ctx.weightName}: the hooks returned ${y}, expected a tensor of this graph ending in ${ctx.outFeatures}`,
      );
    }
    return y;
  };
}
