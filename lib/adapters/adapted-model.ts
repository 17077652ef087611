/**
 * A runnable model: a frozen base (float or 4-bit, see lib/quant/frozen-base.ts) with an optional trained
 * adapter applied unmerged through the projection hook. What `moka generate`, `moka score` and evaluation use.
 */
import type { Graph, ProviderChoice } from '../engine/index.ts';
import { baseModelFingerprint } from '../model/base-identity.ts';
import { projectionShapes, type ProjectionName } from '../model/config.ts';
import { LlamaModel } from '../model/llama-model.ts';
import type { ProjectionHooks } from '../model/projection.ts';
import { openFrozenBase, type FrozenBase } from '../quant/frozen-base.ts';
import { loadAdapter, readAdapterConfig, type LoadedAdapter } from './adapter-files.ts';
import type { AdapterRuntime, BoundAdapter } from './adapter-runtime.ts';
import { resolveTargets } from './targets.ts';

export interface AdaptedModelOptions {
  /** Adapter directory (adapter_config.json + adapter_model.safetensors); none = the base model alone. */
  adapter?: string;
  /** Where the warning about an adapter trained on another base goes (default: stderr). */
  warn?: (message: string) => void;
  provider?: ProviderChoice;
  intraOpThreads?: number;
}

/** L2 norm of every row of each module's base weight (dequantized when 4-bit): DoRA's starting magnitudes. */
export async function baseRowNorms(
  base: FrozenBase,
  modules: readonly string[],
): Promise<Map<string, Float32Array>> {
  const shapes = projectionShapes(base.config);
  const out = new Map<string, Float32Array>();
  for (const module of modules) {
    const proj = module.slice(module.lastIndexOf('.') + 1) as ProjectionName;
    const cols = shapes[proj].in;
    const w = await base.readWeight(`${module}.weight`);
    const norms = new Float32Array(w.length / cols);
    for (let r = 0; r < norms.length; r++) {
      let s = 0;
      for (let j = 0; j < cols; j++) s += w[r * cols + j]! ** 2;
      norms[r] = Math.sqrt(s);
    }
    out.set(module, norms);
  }
  return out;
}

const stderrWarn = (m: string) => process.stderr.write(`warning: ${m}\n`);

/**
 * Loads an adapter for `base`, computing the base row norms first when the adapter is a DoRA. An adapter of
 * another shape is refused (readAdapterConfig); one trained on a base with the same shapes but other weights (its
 * recorded content fingerprint differs, lib/model/base-identity.ts) loads with a warning, since it runs but does
 * not compute what training measured.
 */
export async function loadAdapterFor(
  base: FrozenBase,
  dir: string,
  warn: (message: string) => void = stderrWarn,
): Promise<LoadedAdapter> {
  const { config, baseModel, baseFingerprint } = readAdapterConfig(dir, base.config);
  if (baseFingerprint !== null) {
    const actual = await baseModelFingerprint(base.checkpoint);
    if (actual !== baseFingerprint) {
      warn(
        `${dir} was trained on another base model${baseModel ? ` (${baseModel})` : ''} of the same shape: ` +
          `${base.dir} has other weights (base fingerprint ${actual.slice(0, 12)}…, the adapter records ` +
          `${baseFingerprint.slice(0, 12)}…), so its outputs are not what training measured; use the base it was ` +
          'trained on',
      );
    }
  }
  const norms =
    config.type === 'dora'
      ? await baseRowNorms(
          base,
          resolveTargets(base.config, config).map((t) => t.name),
        )
      : null;
  return loadAdapter(dir, base.config, norms ? { baseRowNorms: (m) => norms.get(m)! } : {});
}

/** Projection hooks that add `runtime`'s update (its inputs bound once per graph) on top of `base`. */
export function adapterHooks(runtime: AdapterRuntime, base?: ProjectionHooks['base']): ProjectionHooks {
  const bound = new WeakMap<Graph, BoundAdapter>();
  return {
    base,
    wrap: (ctx, x, baseFn) => {
      let b = bound.get(x.graph);
      if (!b) bound.set(x.graph, (b = runtime.bind(x.graph)));
      return b.wrap(ctx, x, baseFn);
    },
  };
}

/** Opens `dir` (float or 4-bit) and applies the adapter in `opts.adapter`, if any. */
export async function loadAdaptedModel(dir: string, opts: AdaptedModelOptions = {}): Promise<LlamaModel> {
  const base = await openFrozenBase(dir);
  try {
    let hooks: ProjectionHooks = { base: base.base };
    const feeds: Record<string, Float32Array> = {};
    if (opts.adapter) {
      const loaded = await loadAdapterFor(base, opts.adapter, opts.warn);
      hooks = adapterHooks(loaded.runtime, base.base);
      for (const [name, v] of loaded.values) feeds[name] = v;
    }
    return LlamaModel.fromParts(base.checkpoint, base.weights, {
      hooks,
      feeds,
      provider: opts.provider,
      intraOpThreads: opts.intraOpThreads,
    });
  } catch (err) {
    await base.close();
    throw err;
  }
}
