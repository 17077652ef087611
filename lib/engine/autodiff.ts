/**
 * Reverse-mode differentiation over the graph IR. `grad(loss, wrt)` adds the backward nodes to the loss's
 * graph and returns one gradient tensor per requested tensor. Only nodes that lie on a path from a requested
 * tensor to the loss are differentiated, and each VJP is told which of its inputs need a gradient, so frozen
 * weights never get a weight gradient. Fan-out is handled by summing the contributions.
 */
import { GraphError, type Node, type Tensor } from './graph.ts';
import { add, mul } from './ops/elementwise.ts';
import { fill } from './ops/misc.ts';
import { isFloat } from './dtype.ts';

export interface GradOptions {
  /** Gradient of the loss itself (defaults to 1; required when the loss is not a scalar). */
  seed?: Tensor;
}

export function grad(loss: Tensor, wrt: readonly Tensor[], opts: GradOptions = {}): Tensor[] {
  const graph = loss.graph;
  if (!isFloat(loss.dtype)) throw new GraphError(`grad: the loss ${loss} is not floating-point`);
  if (!opts.seed && loss.rank !== 0) {
    throw new GraphError(`grad: the loss ${loss} is not a scalar; reduce it or pass a seed gradient`);
  }
  for (const w of wrt) {
    if (w.graph !== graph) throw new GraphError(`grad: ${w} is not in the loss's graph`);
    if (!isFloat(w.dtype))
      throw new GraphError(`grad: cannot differentiate with respect to ${w} (not floating-point)`);
  }

  // Forward reachability from wrt (nodes are created in topological order, so one pass suffices).
  const wrtIds = new Set(wrt.map((t) => t.id));
  const dependsOnWrt = new Set<number>(wrtIds);
  // Snapshot: the VJPs below append nodes, which must not be visited. A node's id precedes its outputs'.
  const nodes = graph.nodes.filter((n) => n.id < loss.id);
  for (const n of nodes) {
    if (n.inputs.some((t) => dependsOnWrt.has(t.id))) for (const o of n.outputs) dependsOnWrt.add(o.id);
  }
  if (!dependsOnWrt.has(loss.id)) {
    // Nothing requested influences the loss: all gradients are zero.
    return wrt.map((w) => mul(w, 0));
  }

  // Backward reachability from the loss, restricted to tensors that depend on wrt.
  const needed = new Set<number>([loss.id]);
  const onPath: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!n.outputs.some((o) => needed.has(o.id))) continue;
    if (!n.inputs.some((t) => dependsOnWrt.has(t.id))) continue;
    onPath.push(n);
    for (const t of n.inputs) if (dependsOnWrt.has(t.id)) needed.add(t.id);
  }

  const grads = new Map<number, Tensor>();
  grads.set(loss.id, opts.seed ?? fill(graph, loss.dtype, [], 1));
  const accumulate = (t: Tensor, g: Tensor) => {
    const prev = grads.get(t.id);
    grads.set(t.id, prev ? add(prev, g) : g);
  };

  for (const n of onPath) {
    const outGrads = n.outputs.map((o) => grads.get(o.id) ?? null);
    if (outGrads.every((g) => g === null)) continue;
    const needs = n.inputs.map((t) => needed.has(t.id) && isFloat(t.dtype));
    if (!n.op.vjp)
      throw new GraphError(`grad: op ${n.op.type} has no gradient (used on the path to the loss)`);
    const inGrads = n.op.vjp(n, outGrads, needs);
    n.inputs.forEach((t, i) => {
      const g = inGrads[i];
      if (g && needs[i]) accumulate(t, g);
    });
  }

  return wrt.map((w) => grads.get(w.id) ?? mul(w, 0));
}
