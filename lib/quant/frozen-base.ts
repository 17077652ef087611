/**
 * The frozen base model a run trains or evaluates on: a plain Hugging Face checkpoint (float32 weights in the
 * graph) or a 4-bit one (NF4 / int4 projections kept 4-bit, through the projection hook's `base`).
 *
 * For a 4-bit checkpoint only the packed codes and block scales of the projections are held in memory — never
 * a full-precision copy of all of them; embeddings, norms and the LM head (16-bit in such checkpoints) load
 * as float32 like a plain checkpoint's.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Graph, Tensor, WeightData } from '../engine/index.ts';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint.ts';
import type { LlamaConfig } from '../model/config.ts';
import { loadModelWeights, type ModelWeightsOptions, type WeightSource } from '../model/model-weights.ts';
import type { ProjectionHooks } from '../model/projection.ts';
import { openQuantizedCheckpoint, quantFormatOf, type QuantizedCheckpoint } from './quantized-checkpoint.ts';
import { quantizedLinear, quantizedWeightTensors, type QuantizedWeightTensors } from './quantized-linear.ts';
import type { QuantizedWeight } from './quantized-weight.ts';

export interface FrozenBase {
  dir: string;
  config: LlamaConfig;
  /** The checkpoint (tokenizer, generation config). */
  checkpoint: Checkpoint;
  /** 'float' for a 16/32-bit checkpoint. */
  format: 'float' | 'nf4' | 'int4';
  /** Weights the graph takes as float32 (all of them for a float checkpoint). */
  weights: WeightSource;
  /** The 4-bit projections, for a quantized checkpoint. */
  base?: ProjectionHooks['base'];
  /** A tensor as float32 (dequantized when 4-bit): what merges and DoRA start from. */
  readWeight(weightName: string): Promise<Float32Array>;
  /** Logical tensor names (what an unquantized checkpoint would hold) and shapes. */
  tensorNames(): string[];
  tensorShape(name: string): number[];
  close(): Promise<void>;
}

/** Opens a model directory as a frozen base (4-bit when its config.json has a quantization_config). */
export async function openFrozenBase(dir: string, opts: ModelWeightsOptions = {}): Promise<FrozenBase> {
  // Only config.json says whether the model is 4-bit; reading it alone avoids opening every shard twice. When it
  // is missing or broken, the full open below reports that properly.
  let raw: Record<string, unknown> = {};
  try {
    raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  } catch {
    raw = {};
  }
  const format = raw && typeof raw === 'object' ? quantFormatOf(raw, `${dir}/config.json`) : null;
  if (format === null) {
    const checkpoint = await openCheckpoint(dir);
    const weights = await loadModelWeights(checkpoint, opts).catch(async (err) => {
      await checkpoint.close();
      throw err;
    });
    return {
      dir,
      config: checkpoint.config,
      checkpoint,
      format: 'float',
      weights,
      readWeight: (name) => checkpoint.readFloat32(name),
      tensorNames: () => checkpoint.tensorNames(),
      tensorShape: (name) => [...checkpoint.info(name).shape],
      close: async () => {
        weights.dispose?.();
        await checkpoint.close();
      },
    };
  }
  const q = await openQuantizedCheckpoint(dir);
  try {
    return await openQuantizedBase(dir, q, opts);
  } catch (err) {
    await q.close();
    throw err;
  }
}

const EMPTY = new Uint8Array(0);

async function openQuantizedBase(
  dir: string,
  q: QuantizedCheckpoint,
  opts: ModelWeightsOptions,
): Promise<FrozenBase> {
  const quantized = new Set(q.quantizedWeightNames());
  // The packed codes are referenced where they lie in the checkpoint's shards (ONNX Runtime reads them from
  // there): only the block scales and metadata stay in JavaScript, not a second copy of the 4-bit weights.
  const packed = new Map<string, { w: QuantizedWeight; data: WeightData }>();
  for (const name of quantized) {
    const w = await q.readQuantized(name);
    const at = q.checkpoint.location(name);
    const inPlace = at.length === w.packed.length;
    packed.set(name, { w: inPlace ? { ...w, packed: EMPTY } : w, data: inPlace ? at : w.packed });
  }
  const logical = new Set(q.tensorNames());
  const weights = await loadModelWeights(q.checkpoint, {
    ...opts,
    include: (n) => logical.has(n) && !quantized.has(n) && (opts.include?.(n) ?? true),
  });
  const perGraph = new WeakMap<Graph, Map<string, QuantizedWeightTensors>>();
  const base: ProjectionHooks['base'] = (ctx, graph) => {
    const entry = packed.get(ctx.weightName);
    if (!entry) return undefined; // left in 16 bits (e.g. skipped modules): the float path
    let declared = perGraph.get(graph);
    if (!declared) perGraph.set(graph, (declared = new Map()));
    let tensors = declared.get(ctx.weightName);
    if (!tensors) {
      tensors = quantizedWeightTensors(graph, ctx.weightName, entry.w, entry.data);
      declared.set(ctx.weightName, tensors);
    }
    const t = tensors;
    return (x: Tensor) => quantizedLinear(x, t);
  };
  return {
    dir,
    config: q.config,
    checkpoint: q.checkpoint,
    format: q.format,
    weights,
    base,
    readWeight: (name) => q.readFloat32(name),
    tensorNames: () => q.tensorNames(),
    tensorShape: (name) => [...q.info(name).shape],
    close: async () => {
      weights.dispose?.();
      await q.close();
    },
  };
}
