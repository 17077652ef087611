/**
 * A runnable model: a frozen base (float or 4-bit, see lib/quant/frozen-base.ts) with an optional trained
 * adapter applied unmerged through the projection hook. What `moka generate`, `moka score` and evaluation use.
 */
import type { Graph, ProviderChoice } from '../engine/index.ts';
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

/** Loads an adapter for `base`, computing the base row norms first when the adapter is a DoRA. */
export async function loadAdapterFor(base: FrozenBase, dir: string): Promise<LoadedAdapter> {
  const { config } = readAdapterConfig(dir, base.config);
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
      const loaded = await loadAdapterFor(base, opts.adapter);
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
