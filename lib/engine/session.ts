/**
 * Runs graphs with ONNX Runtime. A Session owns one graph's inputs/outputs; it binds named dimensions from
 * the shapes it is fed, and compiles (and caches) one ORT session per distinct binding, because static
 * shapes are what ORT optimises and plans memory for.
 *
 * Session options avoid the known training-graph pitfalls (see shared/reference/onnxruntime-notes.md §6):
 * constant folding is off (it would duplicate frozen weights and fold Casts of them into full-precision
 * copies), and 4-bit matmuls use the exact path (accuracy level 0) so training and evaluation agree.
 */
import * as ort from 'onnxruntime-node';
import {
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { UserError } from '../errors.ts';
import { makeScratchDir } from '../output-cleanup.ts';
import type { HostArray } from './dtype.ts';
import { ortTypeOf } from './dtype.ts';
import { emitOnnx, type EmittedModel, type ExternalBlob } from './emit.ts';
import { MOKA_OP_DOMAIN, NativeSession, nativeKernels, ortBinaryDir } from './native-session.ts';
import { GraphError, type Graph, type Tensor } from './graph.ts';
import { bindDim, isStatic, shapeStr, type Shape } from './shape.ts';

export type ProviderName = 'cpu' | 'cuda' | 'webgpu';
export type ProviderChoice = ProviderName | 'auto';

export interface SessionOptions {
  /** Execution provider: 'cpu' (default), 'cuda', 'webgpu', or 'auto' (the first of cuda, webgpu, cpu that starts). */
  provider?: ProviderChoice;
  /** ORT intra-op threads (default: ORT's choice, the physical cores). Use 1 for bit-reproducible runs. */
  intraOpThreads?: number;
  /** ORT graph optimisation level (default 'all'). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Write ORT's optimised graph here (for inspecting what ORT made of ours). */
  optimizedModelPath?: string;
  /** Weights go to external data when their total passes this many bytes (default 1.5 GiB). */
  externalDataTotalBytes?: number;
  /**
   * Compiled ORT sessions (one per distinct binding of named dimensions) kept alive at once; the least recently
   * run one is released when a new binding needs compiling (default 4; 2 for models with external weights). Each holds its own arena, packed
   * weights and mapping of the weight files, so this bounds a run's memory whatever number of batch shapes
   * it meets (measured on a 2-layer LLaMA-2-7B NF4 training step: 0.4–2.3 GB per extra shape kept).
   */
  maxCompiledShapes?: number;
  /**
   * ORT's CPU memory arena (default: on for models whose weights stay in the model file, off for those with
   * external weights, i.e. large ones). The arena never returns memory and grows by powers of two: on a 2-layer
   * LLaMA-2-7B NF4 training step of 1 × 512 tokens its high-water mark rose from 3.7 to 4.6 GB over three runs
   * (7.7 GB in another), while without it the peak stayed at 3.6 GB; the page faults it saves matter for small
   * graphs run often, not for runs of seconds.
   */
  memArena?: boolean;
  /**
   * Let ORT pre-pack constant matmul weights into its GEMM layout when a session is created (default: on for
   * models whose weights stay in the model file, off for those with external weights, i.e. large ones). The
   * packed copy is as large as the weight and is kept for the session's life, beside the original (mapped)
   * weight: on the 1-layer LLaMA-2-7B shape it is the float head (524 MB) and, for a float base, every
   * projection. Measured without it (peak RSS, step time): NF4 training step 1938 → 1488 MB at the same speed
   * (1280 vs 1270 ms), LLaMA-3-8B NF4 generation 6619 → 4815 MB (55 ms per token either way), float training
   * step 3211 → 1864 MB but 1139 → 1203 ms; session creation 1.7–6 s faster. Graphs with int4's MatMulNBits keep
   * it: that kernel's fast path runs on the weights it pre-packed (without, a token took 537 ms instead of 23).
   */
  prepacking?: boolean;
  /**
   * Let ops use moka's own kernels (native/, e.g. the NF4 generation kernel) on the CPU provider, in sessions
   * created by moka's native addon (default: true when the addon is built; MOKA_NATIVE_KERNELS=0 turns it off
   * everywhere). Graphs that end up using none run on onnxruntime-node as before.
   */
  nativeKernels?: boolean;
}

/** int4's fused op (lib/quant/quantized-linear.ts), which needs ORT's pre-packing to be fast. */
const MATMUL_NBITS = 'com.microsoft:MatMulNBits';

/**
 * Whether ORT pre-packs a compiled model's matmul weights unless SessionOptions.prepacking says otherwise: for
 * models whose weights stay in the model file, and for any using int4's MatMulNBits, whose fast kernel runs on
 * the weights it pre-packed (without it a LLaMA-2-7B-shaped token took 537 ms instead of 23).
 */
export function prepacksByDefault(emitted: Pick<EmittedModel, 'external' | 'ops'>): boolean {
  return !emitted.external || emitted.ops.includes(MATMUL_NBITS);
}

/** How a compiled session uses memory (SessionOptions.memArena and .prepacking, resolved for one model). */
interface SessionMemory {
  memArena: boolean;
  prepacking: boolean;
}

export type Feed = HostArray | ort.Tensor | { data: HostArray; dims: readonly number[] };

export interface SessionSpec {
  inputs: readonly Tensor[];
  outputs: Readonly<Record<string, Tensor>>;
}

/** What Session needs of an ONNX Runtime session: onnxruntime-node's, or one of moka's native addon. */
interface RunnableSession {
  readonly inputNames: readonly string[];
  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>;
  release(): Promise<void>;
}

interface Compiled {
  session: RunnableSession;
  provider: ProviderName;
  inputNames: Set<string>;
  nodeCount: number;
  /** Runs in progress, and whether the session was evicted (released once the last run ends). */
  running: number;
  evicted: boolean;
}

const OPTIMIZATION_LEVEL = { disabled: 0, basic: 1, extended: 2, all: 99 } as const;

export function cudaProviderInstalled(): boolean {
  const lib =
    process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
  return existsSync(join(ortBinaryDir(), lib));
}

const CUDA_HOWTO =
  'The CUDA execution provider is not installed. onnxruntime-node downloads it at install time only when asked: ' +
  'on a machine with CUDA 13 libraries and network access run ' +
  '`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install` ' +
  '(the GPU container image does this), or use --provider cpu.';

export class Session {
  private readonly compiled = new Map<string, Promise<Compiled>>();
  private readonly inputsByName = new Map<string, Tensor>();

  constructor(
    readonly graph: Graph,
    readonly spec: SessionSpec,
    readonly options: SessionOptions = {},
  ) {
    for (const t of spec.inputs) {
      if (t.kind !== 'input' || !t.name)
        throw new GraphError(`session "${graph.name}": ${t} is not a graph input`);
      this.inputsByName.set(t.name, t);
    }
  }

  /** Binds named dimensions from the fed shapes; throws naming the input and dimension on a mismatch. */
  bind(feeds: Readonly<Record<string, Feed>>): Map<string, number> {
    const binding = new Map<string, number>();
    const checks: [string, Shape, readonly number[]][] = [];
    for (const [name, t] of this.inputsByName) {
      const feed = feeds[name];
      if (feed === undefined) throw new GraphError(`session "${this.graph.name}": missing input "${name}"`);
      const dims = feedDims(feed, t);
      if (dims.length !== t.rank) {
        throw new GraphError(
          `session "${this.graph.name}": input "${name}" has shape [${dims}], expected ${shapeStr(t.shape)}`,
        );
      }
      t.shape.forEach((d, i) => {
        if (typeof d === 'string' && /^[A-Za-z_]\w*$/.test(d)) {
          const prev = binding.get(d);
          if (prev !== undefined && prev !== dims[i]) {
            throw new GraphError(
              `session "${this.graph.name}": dimension "${d}" is ${prev} elsewhere but ${dims[i]} in input "${name}"`,
            );
          }
          binding.set(d, dims[i]!);
        }
      });
      checks.push([name, t.shape, dims]);
    }
    for (const [name, shape, dims] of checks) {
      shape.forEach((d, i) => {
        if (bindDim(d, binding) !== dims[i]) {
          throw new GraphError(
            `session "${this.graph.name}": input "${name}" has shape [${dims}], expected ${shapeStr(shape)}`,
          );
        }
      });
    }
    return binding;
  }

  /** Runs the graph; returns the named outputs. */
  async run(feeds: Readonly<Record<string, Feed>>): Promise<Record<string, ort.Tensor>> {
    const binding = this.bind(feeds);
    const compiled = await this.compile(binding);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of this.inputsByName) {
      if (!compiled.inputNames.has(name)) continue; // not needed for the requested outputs
      ortFeeds[name] = toOrtTensor(feeds[name]!, t, binding);
    }
    compiled.running++;
    try {
      return await compiled.session.run(ortFeeds);
    } catch (err) {
      throw new Error(`graph "${this.graph.name}" on ${compiled.provider}: ${(err as Error).message}`);
    } finally {
      if (--compiled.running === 0 && compiled.evicted) await compiled.session.release();
    }
  }

  /** The provider the session for this binding runs on (compiling it if needed). */
  async providerFor(feeds: Readonly<Record<string, Feed>>): Promise<ProviderName> {
    return (await this.compile(this.bind(feeds))).provider;
  }

  /** The ONNX model for a binding, as bytes (for tests, export and debugging). */
  emit(binding: ReadonlyMap<string, number>, nativeKernels = false): EmittedModel {
    return emitOnnx(this.graph.name, {
      ...this.spec,
      binding,
      externalDataTotalBytes: this.options.externalDataTotalBytes,
      nativeKernels,
    });
  }

  async release(): Promise<void> {
    const all = [...this.compiled.values()];
    this.compiled.clear();
    for (const p of all) {
      const c = await p.catch(() => null);
      if (c) await c.session.release();
    }
    if (this.weightsDir) rmSync(this.weightsDir, { recursive: true, force: true });
    this.weightsDir = null;
    this.unregisterWeightsDir();
  }

  private compile(binding: Map<string, number>): Promise<Compiled> {
    const key = [...binding.entries()]
      .sort()
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    let p = this.compiled.get(key);
    if (p) {
      // Most recently used last (Map iteration order), for the eviction below.
      this.compiled.delete(key);
      this.compiled.set(key, p);
      return p;
    }
    // Large models (weights in external files) keep fewer: each session maps all their weights again.
    const limit = Math.max(1, this.options.maxCompiledShapes ?? (this.weightsDir ? 2 : 4));
    while (this.compiled.size >= limit) {
      const [oldKey, old] = this.compiled.entries().next().value!;
      this.compiled.delete(oldKey);
      // A session still running is released when its last run ends.
      void old
        .then((c) => {
          c.evicted = true;
          return c.running === 0 ? c.session.release() : undefined;
        })
        .catch(() => undefined);
    }
    p = this.create(binding);
    this.compiled.set(key, p);
    p.catch(() => this.compiled.delete(key));
    return p;
  }

  /**
   * The directory of this session's external weights, written once: the weights are the same whatever the
   * shapes, so each further binding only adds its own small `model-<n>.onnx` beside them.
   */
  private weightsDir: string | null = null;
  /** Removes weightsDir if the process is interrupted first (lib/output-cleanup.ts). */
  private unregisterWeightsDir: () => void = () => {};
  private modelFiles = 0;
  /** For 'auto': the provider that started, so later bindings do not retry the ones that failed. */
  private resolvedProvider: ProviderName | null = null;

  private writeExternal(emitted: EmittedModel): string {
    const external = emitted.external!;
    if (!this.weightsDir) {
      const scratch = makeScratchDir('moka-onnx-');
      const dir = scratch.dir;
      try {
        for (const link of external.links) placeBeside(resolve(link.target), join(dir, link.location));
        const fd = openSync(join(dir, external.location), 'w');
        try {
          for (const part of external.parts) writeSync(fd, part.bytes());
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
      this.weightsDir = dir;
      this.unregisterWeightsDir = scratch.done;
    }
    const path = join(this.weightsDir, `model-${this.modelFiles++}.onnx`);
    writeFileSync(path, emitted.model);
    return path;
  }

  private async create(binding: Map<string, number>): Promise<Compiled> {
    const choice = this.options.provider ?? 'cpu';
    const candidates: ProviderName[] =
      choice !== 'auto' ? [choice] : this.resolvedProvider ? [this.resolvedProvider] : autoCandidates();
    // moka's kernels are CPU kernels: only for a session that can only be on the CPU provider.
    const native =
      candidates.length === 1 &&
      candidates[0] === 'cpu' &&
      (this.options.nativeKernels ?? true) &&
      !!nativeKernels();
    const emitted = this.emit(binding, native);
    // Large weights: the model is loaded by path beside its weights (ORT then maps the files).
    const source: string | Uint8Array = emitted.external ? this.writeExternal(emitted) : emitted.model;
    const memory: SessionMemory = {
      memArena: this.options.memArena ?? !emitted.external,
      prepacking: this.options.prepacking ?? prepacksByDefault(emitted),
    };
    let lastError: Error | null = null;
    for (const provider of candidates) {
      try {
        const session = emitted.domains.includes(MOKA_OP_DOMAIN)
          ? await this.createNative(source, memory, emitted.external)
          : await this.createOn(provider, source, memory);
        this.resolvedProvider = provider;
        return {
          session,
          provider,
          inputNames: new Set(session.inputNames),
          nodeCount: emitted.nodeCount,
          running: 0,
          evicted: false,
        };
      } catch (err) {
        lastError = err as Error;
      }
    }
    throw lastError!;
  }

  /** ORT's session settings shared by both kinds of session. */
  private sessionSettings(memory: SessionMemory) {
    return {
      // ORT's own log lines repeat what its exceptions already carry (moka reports those) and warn about choices
      // made on purpose: fatal only, unless MOKA_DEBUG asks for warnings too (0 verbose … 4 fatal).
      logSeverityLevel: process.env.MOKA_DEBUG ? 2 : 4,
      graphOptimizationLevel: this.options.optimization ?? 'all',
      // ';' separates names (with ',' ORT silently disables nothing). CommonSubexpressionElimination would
      // merge a backward re-decode of a 4-bit weight with the forward's, keeping every layer's decoded weight
      // alive until the backward (measured: +1.7 GB per LLaMA-2-7B layer); see docs/quantization.md.
      config: {
        'session.qdq_matmulnbits_accuracy_level': '0',
        'optimization.disable_specified_optimizers': 'ConstantFolding;CommonSubexpressionElimination',
        ...(memory.prepacking ? {} : { 'session.disable_prepacking': '1' }),
      },
    } as const;
  }

  /** A session of moka's native addon (lib/engine/native-session.ts), for graphs that use moka's kernels. */
  private async createNative(
    source: string | Uint8Array,
    memory: SessionMemory,
    external: ExternalBlob | null,
  ): Promise<RunnableSession> {
    const settings = this.sessionSettings(memory);
    // Weights that sit in files (checkpoint shards) are read from one mapping per file shared by all of the
    // addon's sessions, not mapped again by each (a model's prompt and decode-step sessions: 2556 -> 1540 MB
    // peak RSS on 4 LLaMA-2-7B NF4 layers).
    const sharedInitializers = (external?.inPlace ?? []).map((w) => ({
      name: w.tensorName,
      file: resolve(w.file),
      offset: w.offset,
      length: w.length,
      elementType: w.dataType,
      dims: w.dims,
    }));
    try {
      return await NativeSession.create(source, {
        ...(this.options.intraOpThreads ? { intraOpThreads: this.options.intraOpThreads } : {}),
        graphOptimizationLevel: OPTIMIZATION_LEVEL[settings.graphOptimizationLevel],
        logSeverityLevel: settings.logSeverityLevel,
        // Large models (no per-session arena): the addon's shared arena.
        memArena: memory.memArena ? 1 : 2,
        // ORT's planner buffer reuse stays off (native/memory-settings.cc) unless MOKA_ORT_MEM_REUSE=1 asks
        // for it, to compare.
        memReuse: process.env.MOKA_ORT_MEM_REUSE === '1' ? 1 : 0,
        ...(this.options.optimizedModelPath ? { optimizedModelPath: this.options.optimizedModelPath } : {}),
        ...(process.env.MOKA_ORT_PROFILE ? { profileFilePrefix: process.env.MOKA_ORT_PROFILE } : {}),
        config: Object.entries(settings.config),
        ...(sharedInitializers.length ? { sharedInitializers } : {}),
      });
    } catch (err) {
      throw new Error(
        `graph "${this.graph.name}": ONNX Runtime rejected the model: ${(err as Error).message}`,
      );
    }
  }

  private async createOn(
    provider: ProviderName,
    source: string | Uint8Array,
    memory: SessionMemory,
  ): Promise<ort.InferenceSession> {
    if (provider === 'cuda' && !cudaProviderInstalled()) throw new UserError(CUDA_HOWTO);
    const settings = this.sessionSettings(memory);
    const opts: ort.InferenceSession.SessionOptions = {
      executionProviders: [provider],
      logSeverityLevel: settings.logSeverityLevel,
      graphOptimizationLevel: settings.graphOptimizationLevel,
      enableCpuMemArena: memory.memArena,
      // The memory pattern pre-allocates one block for a run's planned intermediates on top of what the
      // arena already holds: measured +1.5 GB (1 layer) to +2 GB (2 layers) on a LLaMA-2-7B NF4 training step,
      // for no measurable speed gain. The arena alone reuses freed buffers.
      enableMemPattern: false,
      // Session configuration entries by their dotted keys (onnxruntime-node passes them on as they are).
      extra: settings.config,
    };
    if (this.options.intraOpThreads) opts.intraOpNumThreads = this.options.intraOpThreads;
    if (this.options.optimizedModelPath) opts.optimizedModelFilePath = this.options.optimizedModelPath;
    // ORT's per-node profile (JSON, written when the session is released), for finding where time goes.
    if (process.env.MOKA_ORT_PROFILE) {
      opts.enableProfiling = true;
      opts.profileFilePrefix = process.env.MOKA_ORT_PROFILE;
    }
    try {
      return typeof source === 'string'
        ? await ort.InferenceSession.create(source, opts)
        : await ort.InferenceSession.create(source, opts);
    } catch (err) {
      const msg = (err as Error).message;
      if (provider === 'cuda')
        throw new UserError(`the CUDA provider failed to start: ${msg}. ${CUDA_HOWTO}`);
      if (provider === 'webgpu') {
        throw new UserError(
          `the WebGPU provider failed to start: ${msg}. It needs a GPU with a Vulkan driver (Debian: libvulkan1 ` +
            'and the vendor driver); use --provider cpu otherwise.',
        );
      }
      throw new Error(`graph "${this.graph.name}": ONNX Runtime rejected the model: ${msg}`);
    }
  }
}

/**
 * Makes a weight file visible beside the model file. ORT refuses external data outside the model's directory
 * (symbolic links included), so this is a hard link, or a copy when the file is on another filesystem.
 */
function placeBeside(target: string, path: string): void {
  try {
    linkSync(target, path);
  } catch {
    copyFileSync(target, path);
  }
}

function autoCandidates(): ProviderName[] {
  const list: ProviderName[] = [];
  if (cudaProviderInstalled()) list.push('cuda');
  list.push('webgpu', 'cpu');
  return list;
}

function feedDims(feed: Feed, t: Tensor): readonly number[] {
  if (feed instanceof ort.Tensor) return feed.dims;
  if ('dims' in feed && !ArrayBuffer.isView(feed)) return feed.dims;
  if (!isStatic(t.shape)) {
    throw new GraphError(`input "${t.name}" has named dimensions ${shapeStr(t.shape)}: feed {data, dims}`);
  }
  return t.shape;
}

function toOrtTensor(feed: Feed, t: Tensor, binding: ReadonlyMap<string, number>): ort.Tensor {
  if (feed instanceof ort.Tensor) return feed;
  const data = ArrayBuffer.isView(feed) ? feed : feed.data;
  const dims = ArrayBuffer.isView(feed) ? t.shape.map((d) => bindDim(d, binding)) : [...feed.dims];
  const type = ortTypeOf(t.dtype);
  if (!type) throw new GraphError(`input "${t.name}": ${t.dtype} cannot be fed from JavaScript`);
  const expected = dims.reduce((a, b) => a * b, 1);
  if (data.length !== expected) {
    throw new GraphError(
      `input "${t.name}": ${data.length} values for shape [${dims}] (${expected} expected)`,
    );
  }
  return new ort.Tensor(type, data as never, dims);
}
