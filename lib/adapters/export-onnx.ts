/**
 * `moka export-onnx`: the model (optionally with an adapter, merged or not) as a standalone ONNX model for
 * inference with any ONNX Runtime. Inputs: `input_ids` int64 [batch, seq], `attention_mask` int64 [batch, seq]
 * (1 = token, 0 = right padding) and `position_ids` int64 [seq]; output: `logits` float32 [batch, seq, vocab].
 * RoPE tables for positions 0..maxPositions−1 are constants inside the model.
 *
 * Shapes are static (batch and seq fixed at export): the engine compiles static shapes, which is also what ORT
 * optimises best; export one model per shape you serve, or pad to it.
 *
 * Unmerged, the adapter's tensors become initializers and the fused update stays in the graph; a 4-bit base
 * stays 4-bit (MatMulNBits / decode ops from com.microsoft and opset 21). Merged, the adapter is added to
 * the (dequantized) weights first, through a streamed `moka merge` into a temporary directory.
 */
import { existsSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { Graph, gather, type Tensor } from '../engine/index.ts';
import { emitOnnx } from '../engine/emit.ts';
import { writeOnnxModel } from '../engine/onnx-file.ts';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { makeScratchDir, removeStaleTempFiles } from '../output-cleanup.ts';
import { buildLlamaGraph } from '../model/llama-graph.ts';
import type { ProjectionHooks } from '../model/projection.ts';
import { positionRange, ropeCosSin, ropeInverseFrequencies } from '../model/rope-frequencies.ts';
import { openFrozenBase, type FrozenBase } from '../quant/frozen-base.ts';
import { loadAdapterFor } from './adapted-model.ts';
import { mergeCheckpoint } from './merge-checkpoint.ts';
import { projectionModuleName } from './targets.ts';

export interface ExportOnnxOptions {
  model: string;
  adapter?: string;
  /** Merge the adapter into the weights (default: keep it as a separate, fused branch). */
  merged?: boolean;
  /** Output .onnx path; large weights go to `<name>.weights` beside it. */
  out: string;
  batch?: number;
  seq?: number;
  /** Positions the RoPE tables cover (default min(max_position_embeddings, 4096)). */
  maxPositions?: number;
  /** Replace an existing model at `out` (and its weights file). */
  force?: boolean;
  /** Where the warning about an adapter trained on another base goes (default: stderr). */
  warn?: (message: string) => void;
}

/** Refuses to overwrite an existing --out (or the weights file beside it) unless `force`. */
function checkOutput(out: string, weightsFile: string, force: boolean): void {
  if (existsSync(out) && statSync(out).isDirectory()) {
    throw new UserError(`--out ${out} is a directory; give the path of a .onnx file to write`);
  }
  const existing = [out, weightsFile].filter((p) => existsSync(p));
  if (existing.length > 0 && !force) {
    throw new UserError(
      `${existing.join(' and ')} already exist${existing.length === 1 ? 's' : ''}; choose another --out, or pass ` +
        '--force to replace it',
    );
  }
}

export async function exportOnnx(opts: ExportOnnxOptions): Promise<{ files: string[]; nodes: number }> {
  if (opts.merged && !opts.adapter) throw new UserError('--merged needs --adapter');
  if (!opts.out.endsWith('.onnx')) throw new UserError(`--out must name a .onnx file, got "${opts.out}"`);
  const out = resolve(opts.out);
  const name = basename(out, '.onnx');
  checkOutput(out, join(dirname(out), `${name}.weights`), opts.force ?? false);
  await makeDirs(dirname(out));
  // Temporary files of an export that was killed (SIGKILL): `<name>.onnx.tmp-<pid>`, `<name>.weights.tmp-<pid>`.
  await removeStaleTempFiles(dirname(out), { prefix: `${name}.` });
  let mergedDir: string | null = null;
  let unregisterMerged = () => {};
  let base: FrozenBase | null = null;
  try {
    let modelDir = opts.model;
    if (opts.merged) {
      ({ dir: mergedDir, done: unregisterMerged } = makeScratchDir('moka-export-'));
      const mergedOut = join(mergedDir, 'merged');
      await mergeCheckpoint({ model: opts.model, adapter: opts.adapter!, out: mergedOut, warn: opts.warn });
      modelDir = mergedOut;
    }
    base = await openFrozenBase(modelDir);
    const cfg = base.config;
    const batch = opts.batch ?? 1;
    const seq = opts.seq ?? 128;
    const maxPositions = opts.maxPositions ?? Math.min(cfg.maxPositionEmbeddings, 4096);
    if (seq > maxPositions)
      throw new UserError(`--seq ${seq} is longer than --max-positions ${maxPositions}`);
    const g = new Graph(name);
    const positions = g.input('position_ids', 'int64', [seq]);
    const tables = ropeCosSin(ropeInverseFrequencies(cfg), positionRange(0, maxPositions));
    const half = cfg.headDim / 2;
    const rope = {
      cos: gather(g.weight('rope_cos_table', 'float32', [maxPositions, half], tables.cos), positions),
      sin: gather(g.weight('rope_sin_table', 'float32', [maxPositions, half], tables.sin), positions),
    };
    let hooks: ProjectionHooks = { base: base.base };
    if (opts.adapter && !opts.merged) {
      const { runtime, values } = await loadAdapterFor(base, opts.adapter, opts.warn);
      const constants = new Map<string, Tensor>();
      const weightOf = (tensorName: string) => {
        let t = constants.get(tensorName);
        if (!t) {
          const spec = runtime.tensors.find((s) => s.name === tensorName)!;
          t = g.weight(tensorName, 'float32', spec.shape, values.get(tensorName)!);
          constants.set(tensorName, t);
        }
        return t;
      };
      hooks = {
        base: base.base,
        wrap: (ctx, x, baseFn) =>
          runtime.project(projectionModuleName(ctx.layer, ctx.proj), x, baseFn, weightOf),
      };
    }
    const model = buildLlamaGraph(g, cfg, base.weights, { hooks, batch, seq, rope });
    const emitted = emitOnnx(name, {
      inputs: [model.inputs.inputIds, model.inputs.attentionMask, positions],
      outputs: { logits: model.logits() },
      binding: new Map(),
      copyFileWeights: true,
    });
    return { files: writeOnnxModel(out, emitted), nodes: emitted.nodeCount };
  } finally {
    await base?.close();
    if (mergedDir) rmSync(mergedDir, { recursive: true, force: true });
    unregisterMerged();
  }
}
