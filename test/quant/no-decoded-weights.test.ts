/**
 * A session over a 4-bit base holds no full-precision copy of the frozen projections (issue #11). Checked on
 * ORT's optimised graph (`optimizedModelFilePath`) of a tiny NF4 + double-quant model, for the MoKA training
 * step and for the scoring/decoding forward:
 *   - no float initializer beyond the checkpoint's float weights (embeddings, head, norms): constant folding of
 *     a decode subgraph would show up as one;
 *   - the forward projections run as a fused kernel (MatMulBnb4, or moka's MatMul4bit for a few rows), with no
 *     decode in the forward at all;
 *   - in the training graph each decode of a weight feeds exactly one matmul (the gradient's dY·W, right where
 *     it is used): a decode shared between two consumers (what common-subexpression elimination made of the
 *     forward's and the backward's) keeps the float weight alive in between;
 *   - and the training step's loss and gradients equal those of the same graph without recomputation
 *     (rel < 1e-5), and the forward equals the float model of the dequantized weights (rel < 1e-4).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { Graph, Session } from '../../lib/engine/index.ts';
import { nativeMemorySettings } from '../../lib/engine/native-session.ts';
import { buildLlamaGraph } from '../../lib/model/llama-graph.ts';
import type { FrozenBase } from '../../lib/quant/frozen-base.ts';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { createLlamaStepProgram } from '../../lib/train/llama-step-program.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import type { TokenBatch } from '../../lib/train/step-program.ts';
import { openTinyNf4Base, type TinyNf4Base } from '../helpers/tiny-nf4-base.ts';

const { onnx } = onnxProto;
let tiny: TinyNf4Base;
let root: string;
let base: FrozenBase;
const HIDDEN = 64;
const MLP = 128;
const LAYERS = 2;

beforeAll(async () => {
  tiny = await openTinyNf4Base('moka-no-decoded-', {
    seed: 3,
    hiddenSize: HIDDEN,
    intermediateSize: MLP,
    numLayers: LAYERS,
    numHeads: 4,
    numKvHeads: 2,
  });
  ({ base, root } = tiny);
});

afterAll(() => tiny?.close());

function loadGraph(path: string) {
  return onnx.ModelProto.decode(readFileSync(path)).graph!;
}

const FLOAT = 1;
const count = (shape: readonly unknown[]) => shape.reduce<number>((a, b) => a * Number(b), 1);

/** Float initializers that are none of the checkpoint's float weights and as large as the smallest projection. */
function decodedInitializers(graph: onnxProto.onnx.IGraphProto): string[] {
  const smallest = Math.min(HIDDEN * HIDDEN, HIDDEN * MLP, (HIDDEN / 2) * HIDDEN);
  return graph
    .initializer!.filter((t) => t.dataType === FLOAT && count(t.dims ?? []) >= smallest)
    .map((t) => t.name!)
    .filter((name) => !base.weights.has(name));
}

const opCount = (graph: onnxProto.onnx.IGraphProto, op: string) =>
  graph.node!.filter((n) => n.opType === op).length;

/**
 * Forward 4-bit products: ORT's MatMulBnb4, moka's MatMul4bit (few rows), or moka's Dequantize4bit feeding a
 * transposed Gemm (many rows), the last two in sessions of moka's native addon.
 */
function fusedCount(graph: onnxProto.onnx.IGraphProto): number {
  const dequantized = new Set(
    graph.node!.filter((n) => n.opType === 'Dequantize4bit').map((n) => n.output![0]!),
  );
  const decodeThenGemm = graph.node!.filter(
    (n) => n.opType === 'Gemm' && dequantized.has(n.input![1]!),
  ).length;
  return opCount(graph, 'MatMulBnb4') + opCount(graph, 'MatMul4bit') + decodeThenGemm;
}

/**
 * For each decode (a Gather from the 256 × 2 byte table, or moka's Dequantize4bit), the matmuls its value
 * reaches through the decode's own reshapes and scaling.
 */
function decodeConsumers(graph: onnxProto.onnx.IGraphProto): number[] {
  const consumers = new Map<string, onnxProto.onnx.INodeProto[]>();
  for (const n of graph.node!) for (const i of n.input!) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const tables = new Set(
    graph.initializer!.filter((t) => t.dataType === FLOAT && count(t.dims ?? []) === 512).map((t) => t.name!),
  );
  const decodes = graph.node!.filter(
    (n) => (n.opType === 'Gather' && tables.has(n.input![0]!)) || n.opType === 'Dequantize4bit',
  );
  const pass = new Set(['Reshape', 'Mul', 'Sub', 'Identity', 'Unsqueeze', 'Slice', 'Pad', 'Cast']);
  return decodes.map((d) => {
    let matmuls = 0;
    const stack = [...d.output!];
    const seen = new Set<string>();
    while (stack.length) {
      const v = stack.pop()!;
      if (seen.has(v)) continue;
      seen.add(v);
      for (const c of consumers.get(v) ?? []) {
        if (pass.has(c.opType!)) stack.push(...c.output!);
        else matmuls++;
      }
    }
    return matmuls;
  });
}

function batchOf(b: number, s: number): TokenBatch {
  const n = b * s;
  return {
    inputIds: BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 37 + 5) % 500)),
    labels: BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 53 + 1) % 500)),
    attentionMask: new Uint8Array(n).fill(1),
    batchSize: b,
    seqLen: s,
  };
}

describe('a session over a 4-bit base holds no decoded weights', () => {
  it('MoKA training step: fused forward, one use per backward decode, gradients as without recomputation', async () => {
    const dump = join(root, 'train.onnx');
    const runtime = createAdapterRuntime(
      base.config,
      parseAdapterConfig({ type: 'moka', targetModules: 'all-linear' }),
      { seed: 2 },
    );
    const make = (recompute: boolean) =>
      createLlamaStepProgram({
        config: base.config,
        weights: base.weights,
        base: base.base!,
        adapter: runtime,
        intraOpThreads: 1,
        recompute,
        ...(recompute ? { optimizedModelPath: dump } : {}),
      });
    const withRecompute = make(true);
    const without = make(false);
    // Non-zero adapter values, so every gradient path carries signal.
    const rand = seededRandom(4);
    const params = new Map(
      withRecompute.trainables.map((t) => [
        t.name,
        Float32Array.from(randomNormal(t.init.length, rand, 0.05)),
      ]),
    );
    const batch = batchOf(2, 16);
    const a = await withRecompute.lossAndGrads(batch, params);
    const b = await without.lossAndGrads(batch, params);
    await withRecompute.release();
    await without.release();

    expect(Math.abs(a.lossSum - b.lossSum) / Math.abs(b.lossSum)).toBeLessThan(1e-5);
    let num = 0;
    let den = 0;
    for (const [name, g] of b.grads) {
      const h = a.grads.get(name)!;
      for (let i = 0; i < g.length; i++) {
        num = Math.max(num, Math.abs(h[i]! - g[i]!));
        den = Math.max(den, Math.abs(g[i]!));
      }
    }
    expect(num / den).toBeLessThan(1e-5);

    const graph = loadGraph(dump);
    expect(decodedInitializers(graph)).toEqual([]);
    // Forward and recomputed forward, 7 projections per layer each, all fused; less down_proj's base in each
    // recomputed layer, whose value no gradient needs (ORT drops it).
    expect(fusedCount(graph)).toBe(2 * 7 * LAYERS - LAYERS);
    const uses = decodeConsumers(graph);
    expect(uses.length).toBeGreaterThan(0);
    expect(uses.every((u) => u === 1)).toBe(true);
  });

  it("ORT's planner buffer reuse, off in native sessions, changes no gradient (MOKA_ORT_MEM_REUSE=1 turns it on)", async () => {
    expect(nativeMemorySettings()).toEqual({ memReuseOff: true });
    const runtime = createAdapterRuntime(
      base.config,
      parseAdapterConfig({ type: 'moka', targetModules: 'all-linear' }),
      { seed: 2 },
    );
    const step = async (memReuse: boolean) => {
      const before = process.env.MOKA_ORT_MEM_REUSE;
      if (memReuse) process.env.MOKA_ORT_MEM_REUSE = '1';
      else delete process.env.MOKA_ORT_MEM_REUSE;
      const program = createLlamaStepProgram({
        config: base.config,
        weights: base.weights,
        base: base.base!,
        adapter: runtime,
        intraOpThreads: 1,
        recompute: true,
      });
      const rand = seededRandom(5);
      const params = new Map(
        program.trainables.map((t) => [t.name, Float32Array.from(randomNormal(t.init.length, rand, 0.05))]),
      );
      try {
        return await program.lossAndGrads(batchOf(2, 16), params); // sessions are made by the first run
      } finally {
        await program.release();
        if (before === undefined) delete process.env.MOKA_ORT_MEM_REUSE;
        else process.env.MOKA_ORT_MEM_REUSE = before;
      }
    };
    const off = await step(false);
    const on = await step(true);
    // Where buffers live does not change arithmetic: equal bit for bit.
    expect(off.lossSum).toBe(on.lossSum);
    expect([...off.grads.keys()]).toEqual([...on.grads.keys()]);
    for (const [name, g] of on.grads) {
      expect(Buffer.from(off.grads.get(name)!.buffer)).toEqual(Buffer.from(g.buffer));
    }
  });

  it('forward (scoring, decoding): fused projections only, the logits of the dequantized model', async () => {
    const dump = join(root, 'forward.onnx');
    const g = new Graph('forward');
    const llama = buildLlamaGraph(g, base.config, base.weights, { hooks: { base: base.base! } });
    const logits = llama.logits();
    const i = llama.inputs;
    const s = new Session(
      g,
      { inputs: [i.inputIds, i.attentionMask, i.ropeCos, i.ropeSin], outputs: { logits } },
      { optimizedModelPath: dump, intraOpThreads: 1 },
    );
    const S = 8;
    const half = base.config.headDim / 2;
    const out = await s.run({
      input_ids: { data: BigInt64Array.from({ length: S }, (_, j) => BigInt(j + 3)), dims: [1, S] },
      attention_mask: { data: new BigInt64Array(S).fill(1n), dims: [1, S] },
      rope_cos: { data: new Float32Array(S * half).fill(1), dims: [S, half] },
      rope_sin: { data: new Float32Array(S * half), dims: [S, half] },
    });
    await s.release();
    expect(out.logits!.data.length).toBe(S * base.config.vocabSize);
    const graph = loadGraph(dump);
    expect(decodedInitializers(graph)).toEqual([]);
    // 8 tokens: the generation kernel (test/quant/matmul-4bit.test.ts checks that the addon is built).
    expect(opCount(graph, 'MatMul4bit')).toBe(7 * LAYERS);
    expect(fusedCount(graph)).toBe(7 * LAYERS);
    expect(decodeConsumers(graph)).toEqual([]);
  });
});
