/**
 * ONNX Runtime sessions created by moka's native addon (native/, built by scripts/build-native.mjs), for
 * graphs that use moka's custom ops — today `ai.moka` MatMul4bit, the NF4 kernel of token-by-token generation.
 * onnxruntime-node cannot register custom ops; the addon creates these sessions through the C API of the same
 * ONNX Runtime library onnxruntime-node loaded, and this module gives them the part of onnxruntime-node's
 * InferenceSession interface lib/engine/session.ts uses (inputNames, run, release), with onnxruntime-node
 * Tensors in and out.
 *
 * The addon is optional: `nativeKernels()` is null when it was not built (no C++ compiler at install time), on
 * Windows, or when MOKA_NATIVE_KERNELS=0; graphs then use ONNX Runtime's own ops.
 */
import * as ort from 'onnxruntime-node';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ONNX_DTYPE, hostArrayOn, ortTypeOf, type DType } from './dtype.ts';

/** The ONNX domain of moka's custom ops. */
export const MOKA_OP_DOMAIN = 'ai.moka';

/** Where scripts/build-native.mjs writes the addon. */
export const NATIVE_ADDON_PATH = fileURLToPath(
  new URL('../../native/build/moka-native.node', import.meta.url),
);

type Triple = [elementType: number, dims: number[], data: ArrayBuffer | ArrayBufferView];

interface Addon {
  load(ortLibraryPath: string): string;
  createSession(
    model: string | Uint8Array,
    options: NativeSessionOptions,
  ): Promise<{ session: object; inputNames: string[]; outputNames: string[] }>;
  run(session: object, inputNames: string[], inputs: Triple[], outputNames: string[]): Promise<Triple[]>;
  release(session: object): void;
  memorySettings(): NativeMemorySettings;
}

/**
 * What the addon can change about memory (native/memory-settings.cc): `memReuseOff`, whether it found ORT's
 * planner buffer reuse switch (which ORT's C API does not offer) in its session options, and so turns the
 * reuse off in its sessions.
 */
export interface NativeMemorySettings {
  memReuseOff: boolean;
}

/** Session settings, as onnxruntime-node's SessionOptions name them. */
export interface NativeSessionOptions {
  intraOpThreads?: number;
  /** 0 disabled, 1 basic, 2 extended, 99 all. */
  graphOptimizationLevel: number;
  /** 0 verbose … 4 fatal. */
  logSeverityLevel: number;
  /**
   * ORT's CPU arena: 0 none, 1 the session's own (ORT's default; grows by powers of two, keeps what it took),
   * 2 one arena shared by the addon's sessions that grows by what is asked (for large models: no page faults
   * for each transient weight; see native/moka-native.cc).
   */
  memArena: 0 | 1 | 2;
  /**
   * ORT's allocation planner buffer reuse: 0 (default) off, where the addon found its switch; 1 on (ORT's
   * default). See native/memory-settings.cc.
   */
  memReuse?: 0 | 1;
  /**
   * Initializers to read from weight files the addon maps once per process and shares between its sessions
   * (ORT's AddInitializer), instead of the model's external data, which ORT would map again for each session
   * (native/shared-weights.cc): the initializer's name, its file (absolute path), byte offset and length,
   * ONNX element type and dims.
   */
  sharedInitializers?: {
    name: string;
    file: string;
    offset: number;
    length: number;
    elementType: number;
    dims: number[];
  }[];
  optimizedModelPath?: string;
  /** Write ORT's per-node profile (JSON, on release) to files with this prefix. */
  profileFilePrefix?: string;
  /** Session configuration entries (`AddSessionConfigEntry`), e.g. optimization.disable_specified_optimizers. */
  config: [string, string][];
}

/**
 * The engine dtypes that cross the JavaScript boundary (ortTypeOf names them as themselves), by their ONNX
 * element type number (TensorProto.DataType), as the addon passes them.
 */
const CROSSING_BY_ELEMENT_TYPE = new Map(
  (Object.keys(ONNX_DTYPE) as DType[]).filter((d) => ortTypeOf(d) === d).map((d) => [ONNX_DTYPE[d], d]),
);

const require = createRequire(import.meta.url);

/** Directory holding onnxruntime-node's native libraries for this platform. */
export function ortBinaryDir(): string {
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

/** The ONNX Runtime shared library onnxruntime-node loads (the addon binds to the same one). */
function ortLibraryPath(): string | null {
  const dir = ortBinaryDir();
  if (!existsSync(dir)) return null;
  const lib = readdirSync(dir).find((f) =>
    process.platform === 'darwin' ? /^libonnxruntime.*\.dylib$/.test(f) : /^libonnxruntime\.so/.test(f),
  );
  return lib ? join(dir, lib) : null;
}

let addon: Addon | null | undefined;
let loadError: string | null = null;

/**
 * The loaded addon, or null when it is not available (not built, unsupported platform, or turned off with
 * MOKA_NATIVE_KERNELS=0). Loading happens once per process.
 */
export function nativeKernels(): Addon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.MOKA_NATIVE_KERNELS === '0') {
    loadError = 'turned off by MOKA_NATIVE_KERNELS=0';
    return null;
  }
  const lib = ortLibraryPath();
  if (!existsSync(NATIVE_ADDON_PATH) || !lib) {
    loadError = `not built (run \`npm run build:native\`; it needs a C++ compiler)`;
    return null;
  }
  try {
    const loaded = require(NATIVE_ADDON_PATH) as Addon;
    loaded.load(lib);
    addon = loaded;
  } catch (err) {
    loadError = (err as Error).message;
  }
  return addon;
}

/** Why nativeKernels() is null (for `moka` diagnostics and test failures), or null when it is loaded. */
export function nativeKernelsUnavailableReason(): string | null {
  nativeKernels();
  return addon ? null : loadError;
}

/** The memory settings the addon applied (see NativeMemorySettings), or null when it is not loaded. */
export function nativeMemorySettings(): NativeMemorySettings | null {
  return nativeKernels()?.memorySettings() ?? null;
}

/** An ONNX Runtime session created by the addon, used like an onnxruntime-node InferenceSession. */
export class NativeSession {
  private handle: object | null;

  private constructor(
    private readonly addon: Addon,
    handle: object,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {
    this.handle = handle;
  }

  /** Creates a session from a model file path or the model's bytes. Rejects with ONNX Runtime's message. */
  static async create(model: string | Uint8Array, options: NativeSessionOptions): Promise<NativeSession> {
    const a = nativeKernels();
    if (!a) throw new Error(`moka's native kernels are not available: ${nativeKernelsUnavailableReason()}`);
    const created = await a.createSession(model, options);
    return new NativeSession(a, created.session, created.inputNames, created.outputNames);
  }

  /** Runs the session on `feeds` (by input name) and returns every output, by name. */
  async run(feeds: Readonly<Record<string, ort.Tensor>>): Promise<Record<string, ort.Tensor>> {
    if (!this.handle) throw new Error('the session was released');
    const names = Object.keys(feeds);
    const inputs = names.map((name): Triple => {
      const t = feeds[name]!;
      const d = t.type as DType;
      if (ortTypeOf(d) !== t.type) throw new Error(`input "${name}": ${t.type} tensors are not supported`);
      return [ONNX_DTYPE[d], [...t.dims], t.data as ArrayBufferView];
    });
    const outputs = await this.addon.run(this.handle, names, inputs, [...this.outputNames]);
    const result: Record<string, ort.Tensor> = {};
    outputs.forEach(([elementType, dims, data], i) => {
      const d = CROSSING_BY_ELEMENT_TYPE.get(elementType);
      if (!d)
        throw new Error(`output "${this.outputNames[i]}": ONNX element type ${elementType} is not supported`);
      const type = d as ort.Tensor.Type; // a crossing dtype is named as ORT names it
      result[this.outputNames[i]!] = new ort.Tensor(type, hostArrayOn(d, data as ArrayBuffer) as never, dims);
    });
    return result;
  }

  async release(): Promise<void> {
    if (!this.handle) return;
    const h = this.handle;
    this.handle = null;
    this.addon.release(h);
  }
}
