/**
 * What an op sees while it is written out as ONNX: value names for its tensors, concrete shapes under the
 * current binding of named dimensions, and helpers to add nodes and small constants.
 */
import onnxProto from 'onnx-proto';
import type { DType } from './dtype.ts';
import { ONNX_DTYPE, float32ToFloat16Bits } from './dtype.ts';
import type { Tensor } from './graph.ts';
import { bindDim, bindShape, type Dim } from './shape.ts';

const { onnx } = onnxProto;
type AttrValue = number | number[] | string | { tensor: onnxProto.onnx.ITensorProto };

export class EmitContext {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  readonly usedDomains = new Set<string>();
  private readonly valueNames = new Map<number, string>();
  private counter = 0;
  private readonly constCache = new Map<string, string>();
  /** Name of the op node currently being emitted, for error messages and ONNX node names. */
  currentOp = '';

  /** Whether ops may emit moka's own `ai.moka` kernels (see EmitRequest.nativeKernels). */
  readonly nativeKernels: boolean;

  constructor(
    readonly binding: ReadonlyMap<string, number>,
    options: { nativeKernels?: boolean } = {},
  ) {
    this.nativeKernels = options.nativeKernels ?? false;
  }

  /** Gives an op's output tensor the value name `name` (before any node refers to it). */
  nameAs(t: Tensor, name: string): void {
    if (this.valueNames.has(t.id)) throw new Error(`internal: ${t} already has a value name`);
    this.valueNames.set(t.id, name);
  }

  /** The ONNX value name of a tensor (its own name for inputs/weights, a generated one otherwise). */
  name(t: Tensor): string {
    let n = this.valueNames.get(t.id);
    if (n === undefined) {
      n = t.name ?? `t${t.id}`;
      this.valueNames.set(t.id, n);
    }
    return n;
  }

  /** A fresh intermediate value name. */
  fresh(hint = 'v'): string {
    return `_${hint}${this.counter++}`;
  }

  /** Concrete value of a (possibly symbolic) dimension under the binding. */
  shapeOfDim(d: Dim): number {
    return bindDim(d, this.binding);
  }

  /** Concrete shape of `t` under the binding. */
  shape(t: Tensor): number[] {
    return bindShape(t.shape, this.binding);
  }

  /** Adds one ONNX node. Attribute numbers are ints when integral, unless `floatAttrs` names them. */
  node(
    opType: string,
    inputs: string[],
    outputs: string[],
    attrs: Record<string, AttrValue> = {},
    opts: { domain?: string; floatAttrs?: string[] } = {},
  ): void {
    const domain = opts.domain ?? '';
    this.usedDomains.add(domain);
    const attribute: onnxProto.onnx.IAttributeProto[] = [];
    for (const [name, v] of Object.entries(attrs)) {
      const A = onnx.AttributeProto.AttributeType;
      const asFloat = opts.floatAttrs?.includes(name) ?? false;
      if (typeof v === 'string') attribute.push({ name, type: A.STRING, s: new TextEncoder().encode(v) });
      else if (typeof v === 'number') {
        if (asFloat || !Number.isInteger(v)) attribute.push({ name, type: A.FLOAT, f: v });
        else attribute.push({ name, type: A.INT, i: v });
      } else if (Array.isArray(v)) {
        if (asFloat) attribute.push({ name, type: A.FLOATS, floats: v });
        else attribute.push({ name, type: A.INTS, ints: v });
      } else attribute.push({ name, type: A.TENSOR, t: v.tensor });
    }
    this.nodes.push({
      opType,
      domain,
      input: inputs,
      output: outputs,
      attribute,
      name: `${this.currentOp}_${this.counter++}`,
    });
  }

  /** An int64 constant (shapes, axes, starts), shared across uses. */
  int64(values: readonly number[], asScalar = false): string {
    const key = `i64:${asScalar ? 's' : 'v'}:${values.join(',')}`;
    let n = this.constCache.get(key);
    if (!n) {
      n = this.fresh('c');
      const data = new BigInt64Array(values.map((v) => BigInt(v)));
      this.initializers.push({
        name: n,
        dataType: ONNX_DTYPE.int64,
        dims: asScalar ? [] : [values.length],
        rawData: new Uint8Array(data.buffer),
      });
      this.constCache.set(key, n);
    }
    return n;
  }

  /** A float32 constant of any shape, emitted once per model for each distinct `key` (e.g. a lookup table). */
  float32Table(key: string, dims: readonly number[], values: () => Float32Array): string {
    const cacheKey = `f32:${key}`;
    let n = this.constCache.get(cacheKey);
    if (!n) {
      n = this.fresh('c');
      const data = values();
      this.initializers.push({
        name: n,
        dataType: ONNX_DTYPE.float32,
        dims: [...dims],
        rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      });
      this.constCache.set(cacheKey, n);
    }
    return n;
  }

  /** A 0-d uint8 constant (bit manipulation of packed codes). */
  uint8Scalar(value: number): string {
    return this.constant(value, 'uint8', false);
  }

  /** A 0-d constant (float32/float64/float16/ints), shared across uses. */
  scalar(value: number, dtype: DType): string {
    return this.constant(value, dtype, false);
  }

  /** A one-element vector constant, shared across uses. */
  scalarVec(value: number, dtype: DType): string {
    return this.constant(value, dtype, true);
  }

  private constant(value: number, dtype: DType, vector: boolean): string {
    const key = `s:${dtype}:${vector}:${Object.is(value, -0) ? '-0' : value}`;
    let n = this.constCache.get(key);
    if (!n) {
      n = this.fresh('c');
      const proto = scalarTensorProto(n, value, dtype);
      if (vector) proto.dims = [1];
      this.initializers.push(proto);
      this.constCache.set(key, n);
    }
    return n;
  }
}

export function scalarTensorProto(name: string, value: number, dtype: DType): onnxProto.onnx.ITensorProto {
  let raw: Uint8Array;
  switch (dtype) {
    case 'float32':
      raw = new Uint8Array(Float32Array.of(value).buffer);
      break;
    case 'float64':
      raw = new Uint8Array(Float64Array.of(value).buffer);
      break;
    case 'float16':
      raw = new Uint8Array(Uint16Array.of(float32ToFloat16Bits(value)).buffer);
      break;
    case 'int64':
      raw = new Uint8Array(BigInt64Array.of(BigInt(value)).buffer);
      break;
    case 'int32':
      raw = new Uint8Array(Int32Array.of(value).buffer);
      break;
    case 'bool':
    case 'uint8':
      raw = Uint8Array.of(value);
      break;
    default:
      throw new Error(`no scalar constants of dtype ${dtype}`);
  }
  return { name, dataType: ONNX_DTYPE[dtype], dims: [], rawData: raw };
}
