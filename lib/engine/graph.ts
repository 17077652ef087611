/**
 * The engine's graph IR: symbolic tensors produced by op nodes. Building a node checks dtypes and shapes at
 * once (a mismatch throws GraphError naming the op and the shapes); `grad` adds backward nodes to the same
 * graph; `emitOnnx` serialises the part needed for chosen outputs.
 */
import type { DType, HostArray } from './dtype.ts';
import type { Shape } from './shape.ts';
import { shapeStr } from './shape.ts';
import type { EmitContext } from './emit-context.ts';

/** A build-time error in a graph: wrong shapes or dtypes for an op, or a misuse of the builder. */
export class GraphError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GraphError';
  }
}

export interface OutputSpec {
  dtype: DType;
  shape: Shape;
}

/**
 * One operation type. Ops are stateless descriptions; a Node is one use of an op in a graph.
 * - `infer` checks the inputs and returns each output's dtype and shape;
 * - `vjp` returns the gradient of each input from the gradients of the outputs (null = zero / not needed),
 *   built from other ops, computing only the inputs flagged in `needs`;
 * - `emit` writes the ONNX nodes computing the outputs.
 */
export interface OpDef<A = unknown> {
  readonly type: string;
  infer(inputs: readonly Tensor[], attrs: A): OutputSpec[];
  vjp?(node: Node<A>, grads: readonly (Tensor | null)[], needs: readonly boolean[]): (Tensor | null)[];
  emit(ctx: EmitContext, node: Node<A>): void;
}

export class Node<A = unknown> {
  readonly outputs: Tensor[] = [];
  constructor(
    readonly id: number,
    readonly op: OpDef<A>,
    readonly inputs: readonly Tensor[],
    readonly attrs: A,
  ) {}
}

/** Where a frozen weight's bytes come from: memory, or a byte range of a file (e.g. a safetensors shard). */
export type WeightData = HostArray | { file: string; offset: number; length: number };

export type TensorKind = 'input' | 'weight' | 'constant' | 'op';

export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly kind: TensorKind,
    readonly producer: Node | null,
    readonly outputIndex: number,
    readonly name: string | null,
    readonly data: WeightData | null,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.name ?? `t${this.id}`}:${this.dtype}${shapeStr(this.shape)}`;
  }
}

export class Graph {
  private nextId = 0;
  readonly nodes: Node[] = [];
  readonly tensors: Tensor[] = [];
  private readonly names = new Set<string>();

  constructor(readonly name: string) {}

  private leaf(kind: TensorKind, name: string | null, dtype: DType, shape: Shape, data: WeightData | null) {
    if (name !== null) {
      if (this.names.has(name))
        throw new GraphError(`graph "${this.name}": the name "${name}" is already used`);
      this.names.add(name);
    }
    const t = new Tensor(this, this.nextId++, dtype, [...shape], kind, null, 0, name, data);
    this.tensors.push(t);
    return t;
  }

  /** A graph input fed at run time (activations, trainable tensors, optimizer state). */
  input(name: string, dtype: DType, shape: Shape): Tensor {
    return this.leaf('input', name, dtype, shape, null);
  }

  /** A frozen weight, stored in the model as an initializer (never a trainable tensor). */
  weight(name: string, dtype: DType, shape: readonly number[], data: WeightData): Tensor {
    return this.leaf('weight', name, dtype, shape, data);
  }

  /** A small constant baked into the graph. */
  constant(dtype: DType, shape: readonly number[], data: HostArray): Tensor {
    return this.leaf('constant', null, dtype, shape, data);
  }

  /** Adds a node of `op` over `inputs`; returns its outputs. Checks happen here, at build time. */
  apply<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor[] {
    for (const t of inputs) {
      if (t.graph !== this) {
        throw new GraphError(`${op.type}: input ${t} belongs to graph "${t.graph.name}", not "${this.name}"`);
      }
    }
    const specs = op.infer(inputs, attrs);
    const node = new Node<A>(this.nextId++, op, inputs, attrs);
    specs.forEach((s, i) => {
      const t = new Tensor(this, this.nextId++, s.dtype, [...s.shape], 'op', node as Node, i, null, null);
      node.outputs.push(t);
      this.tensors.push(t);
    });
    this.nodes.push(node as Node);
    return node.outputs;
  }
}

/** Graph of the given tensors, checking they all share one. */
export function graphOf(op: string, ...ts: Tensor[]): Graph {
  const g = ts[0]!.graph;
  for (const t of ts) {
    if (t.graph !== g) throw new GraphError(`${op}: inputs come from different graphs`);
  }
  return g;
}

/** Throws the standard build-time error for `op`, listing its inputs' dtypes and shapes. */
export function opError(op: string, inputs: readonly Tensor[], problem: string): never {
  const list = inputs.map((t) => `${t.dtype}${shapeStr(t.shape)}`).join(', ');
  throw new GraphError(`${op}(${list}): ${problem}`);
}
