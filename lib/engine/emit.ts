/**
 * Serialises the part of a graph that computes chosen outputs into an ONNX model (opset 21, plus
 * com.microsoft ops), with named dimensions bound to concrete sizes. Frozen weights become initializers;
 * when the model would pass the 2 GB protobuf limit they are written as external data instead.
 */
import onnxProto from 'onnx-proto';
import { readSync, openSync, closeSync } from 'node:fs';
import { basename } from 'node:path';
import { ONNX_DTYPE } from './dtype.ts';
import { EmitContext } from './emit-context.ts';
import { GraphError, type Node, type Tensor } from './graph.ts';
import { bindShape } from './shape.ts';

const { onnx } = onnxProto;

export const OPSET = 21;
export const IR_VERSION = 10;

export interface EmitRequest {
  /** Graph inputs in the order the caller will feed them, by name. */
  inputs: readonly Tensor[];
  /** Named outputs. */
  outputs: Readonly<Record<string, Tensor>>;
  binding: ReadonlyMap<string, number>;
  /**
   * Weights larger than this many bytes go to external data when the model's weights total more than
   * `externalDataTotalBytes` (default: 1.5 GiB, well under the 2 GiB protobuf limit).
   */
  externalDataTotalBytes?: number;
  /**
   * Copy file-backed weights into the external data blob instead of linking to their files (a model that is
   * written out to be used elsewhere must not point into this machine's checkpoint files).
   */
  copyFileWeights?: boolean;
  /**
   * Ops may emit moka's own kernels (domain `ai.moka`, lib/engine/native-session.ts), which only sessions
   * created by moka's native addon can run (default false: ONNX Runtime's ops only).
   */
  nativeKernels?: boolean;
}

export interface ExternalBlob {
  /** File name relative to the model file. */
  location: string;
  /** In-memory weights, concatenated in order into that file. */
  parts: { tensorName: string; bytes: () => Uint8Array }[];
  /**
   * Weights that already sit in a file (e.g. a float32 safetensors shard) are referenced where they are:
   * the model points at `location` (a hard link to `target` beside the model file) at their offset.
   */
  links: { location: string; target: string }[];
  /**
   * The weights referenced where they are (through `links`), each with its file, byte range, ONNX element type
   * and dims: what a session can read from a mapping shared with other sessions instead (lib/engine/session.ts).
   */
  inPlace: {
    tensorName: string;
    file: string;
    offset: number;
    length: number;
    dataType: number;
    dims: number[];
  }[];
}

export interface EmittedModel {
  model: Uint8Array;
  /** Present when weights are external: write them beside the model file and load the model by path. */
  external: ExternalBlob | null;
  nodeCount: number;
  /** The op domains the model uses ('' is the ONNX domain). */
  domains: string[];
  /** The op types the model uses, each once, as `domain:OpType` outside the ONNX domain (`com.microsoft:MatMulNBits`). */
  ops: string[];
}

function weightBytes(t: Tensor): number {
  const d = t.data!;
  return 'file' in d ? d.length : d.byteLength;
}

function readWeight(t: Tensor): Uint8Array {
  const d = t.data!;
  if (!('file' in d)) return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  const fd = openSync(d.file, 'r');
  try {
    const buf = new Uint8Array(d.length);
    let done = 0;
    while (done < d.length) {
      const n = readSync(fd, buf, done, d.length - done, d.offset + done);
      if (n === 0)
        throw new Error(`${d.file} ends before byte ${d.offset + d.length}: the weight file is truncated`);
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

export function emitOnnx(graphName: string, req: EmitRequest): EmittedModel {
  const outputs = Object.entries(req.outputs);
  if (outputs.length === 0) throw new GraphError(`graph "${graphName}": no outputs requested`);

  // Walk back from the outputs to find the nodes and leaves needed.
  const live = new Set<number>();
  const liveNodes = new Map<number, Node>();
  const leaves = new Map<number, Tensor>();
  const stack = outputs.map(([, t]) => t);
  while (stack.length) {
    const t = stack.pop()!;
    if (live.has(t.id)) continue;
    live.add(t.id);
    if (t.producer) {
      liveNodes.set(t.producer.id, t.producer);
      for (const i of t.producer.inputs) stack.push(i);
    } else leaves.set(t.id, t);
  }

  const inputIds = new Set(req.inputs.map((t) => t.id));
  for (const leaf of leaves.values()) {
    if (leaf.kind === 'input' && !inputIds.has(leaf.id)) {
      throw new GraphError(
        `graph "${graphName}": output needs input "${leaf.name}", which is not among the feeds`,
      );
    }
  }

  const ctx = new EmitContext(req.binding, { nativeKernels: req.nativeKernels ?? false });
  const valueInfo = (name: string, t: Tensor) => ({
    name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[t.dtype],
        shape: { dim: bindShape(t.shape, req.binding).map((d) => ({ dimValue: d })) },
      },
    },
  });

  // Weights: inline initializers, or external data when the total is large.
  const weights = [...leaves.values()].filter((t) => t.kind === 'weight').sort((a, b) => a.id - b.id);
  const totalWeightBytes = weights.reduce((s, t) => s + weightBytes(t), 0);
  const externalize = totalWeightBytes > (req.externalDataTotalBytes ?? 1.5 * 2 ** 30);
  const external: ExternalBlob | null = externalize
    ? { location: `${sanitize(graphName)}.weights`, parts: [], links: [], inPlace: [] }
    : null;
  let offset = 0;
  const linkFor = (target: string): string => {
    let link = external!.links.find((l) => l.target === target);
    if (!link) {
      link = { location: `link${external!.links.length}-${sanitize(basename(target))}`, target };
      external!.links.push(link);
    }
    return link.location;
  };
  for (const w of weights) {
    const proto: onnxProto.onnx.ITensorProto = {
      name: ctx.name(w),
      dataType: ONNX_DTYPE[w.dtype],
      dims: bindShape(w.shape, req.binding),
    };
    const data = w.data!;
    if (external && 'file' in data && !req.copyFileWeights) {
      proto.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      proto.externalData = [
        { key: 'location', value: linkFor(data.file) },
        { key: 'offset', value: String(data.offset) },
        { key: 'length', value: String(data.length) },
      ];
      external.inPlace.push({
        tensorName: proto.name!,
        file: data.file,
        offset: data.offset,
        length: data.length,
        dataType: proto.dataType!,
        dims: proto.dims as number[],
      });
    } else if (external && weightBytes(w) >= 1024) {
      const length = weightBytes(w);
      proto.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      proto.externalData = [
        { key: 'location', value: external.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ];
      external.parts.push({ tensorName: w.name!, bytes: () => readWeight(w) });
      offset += length;
    } else proto.rawData = readWeight(w);
    ctx.initializers.push(proto);
  }
  for (const c of leaves.values()) {
    if (c.kind !== 'constant') continue;
    const d = c.data as Exclude<Tensor['data'], null | { file: string }>;
    ctx.initializers.push({
      name: ctx.name(c),
      dataType: ONNX_DTYPE[c.dtype],
      dims: bindShape(c.shape, req.binding),
      rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
    });
  }

  // An output computed by a node is written under its requested name directly; an Identity (a full copy in
  // ORT) is only needed for outputs that are graph inputs or weights, or a tensor requested twice.
  const renamed = new Set<number>();
  for (const [name, t] of outputs) {
    if (t.producer && !renamed.has(t.id)) {
      ctx.nameAs(t, name);
      renamed.add(t.id);
    }
  }
  const sorted = [...liveNodes.values()].sort((a, b) => a.id - b.id);
  for (const n of sorted) {
    ctx.currentOp = `${n.op.type}#${n.id}`;
    n.op.emit(ctx, n);
  }

  for (const [name, t] of outputs) {
    if (ctx.name(t) !== name) ctx.node('Identity', [ctx.name(t)], [name]);
  }

  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'moka',
    opsetImport: [...ctx.usedDomains, '']
      .filter((d, i, a) => a.indexOf(d) === i)
      .map((domain) => ({
        domain,
        version: domain === '' ? OPSET : 1,
      })),
    graph: {
      name: graphName,
      node: ctx.nodes,
      initializer: ctx.initializers,
      input: req.inputs.filter((t) => live.has(t.id)).map((t) => valueInfo(ctx.name(t), t)),
      output: outputs.map(([name, t]) => valueInfo(name, t)),
    },
  });
  return {
    model: onnx.ModelProto.encode(model).finish(),
    external,
    nodeCount: ctx.nodes.length,
    domains: [...ctx.usedDomains],
    ops: [...new Set(ctx.nodes.map((n) => (n.domain ? `${n.domain}:${n.opType}` : n.opType!)))],
  };
}

function sanitize(name: string): string {
  return name.replace(/[^A-Za-z0-9_.-]/g, '_');
}
