/**
 * Adapter files: `adapter_model.safetensors` (float32) + `adapter_config.json`, named the way PEFT users
 * expect (`base_model.model.<module>.<tensor>`), loadable on another machine. The config pins every
 * component shape, so a later planner cannot change what a saved adapter means. adapter_config.json is
 * written last: a directory without it is incomplete and refused.
 *
 * Tensor names per type (module = `model.layers.{i}.self_attn.q_proj` etc., component index i in plan order):
 *   lora/dora  lora_A.weight [r, in], lora_B.weight [out, r], lora_magnitude_vector [out] (DoRA)
 *   krona      lokr_w1 [out_l, in_m] (or lokr_w1_a, lokr_w1_b), lokr_w2 [out_k, in_n] (or lokr_w2_a [out_k, r], lokr_w2_b [r, in_n])
 *   moka       moka_A.{i} [m_a, n_a], moka_B.{i} [m_b, n_b], moka_gate [r] or moka_gate_proj.weight [r, in]
 *   mokas      mokas_B.{i} [m/a_i, n/a_i], mokas_gate [r] or mokas_gate_proj.weight [r, in]
 */
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import type { LlamaConfig } from '../model/config.ts';
import { openSafetensors, writeSafetensors, type SafetensorsTensor } from '../model/safetensors.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import { parseAdapterConfig, type AdapterConfig } from './adapter-config.ts';
import {
  createAdapterRuntime,
  kroneckerGroups,
  type AdapterRuntime,
  type AdapterRuntimeOptions,
} from './adapter-runtime.ts';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
const FORMAT = 'moka-adapter';
const PREFIX = 'base_model.model.';

/** The adapter_config.json format versions this moka reads (and the one it writes). */
const ADAPTER_FORMAT_VERSION = 1;

export interface SavedAdapterInfo {
  /** Base model id or path, for the user's reference. */
  baseModel?: string;
  /** The base's content fingerprint (lib/model/base-identity.ts), checked whenever the adapter is applied. */
  baseFingerprint?: string;
}

/** The config with every shape pinned (explicit components / blocks per projection). */
function pinnedConfig(runtime: AdapterRuntime): AdapterConfig {
  const cfg = runtime.config;
  if (cfg.type === 'moka') {
    const components = Object.fromEntries(
      runtime.plan.projections.map((p) => [
        p.projection,
        p.components.map((c) => {
          if (c.kind !== 'kronecker') throw new Error('internal');
          return { shape: [...c.shape] as [number, number, number, number] };
        }),
      ]),
    );
    return { ...cfg, components, plan: undefined } as AdapterConfig;
  }
  if (cfg.type === 'mokas') {
    const blocks = Object.fromEntries(
      runtime.plan.projections.map((p) => [
        p.projection,
        p.components.map((c) => {
          if (c.kind !== 'block-diagonal') throw new Error('internal');
          return c.blocks;
        }),
      ]),
    );
    return { ...cfg, blocks, plan: undefined } as AdapterConfig;
  }
  return cfg;
}

/**
 * File tensor name(s) of a runtime tensor. A stacked MoKA group [K, m_a, n_a] maps to K per-component
 * tensors; everything else maps one to one.
 */
function fileLayout(
  runtime: AdapterRuntime,
): { runtimeName: string; files: { name: string; offset: number; shape: number[] }[] }[] {
  return runtime.tensors.map((t) => {
    const module = runtime.modules.find((m) => t.name.startsWith(`${m}.`))!;
    const suffix = t.name.slice(module.length + 1);
    const group = /^moka_([AB])\.g(\d+)$/.exec(suffix);
    if (group) {
      const [, which, gi] = group;
      const members = kroneckerGroups(runtime.projectionOf(module)!.components)[Number(gi)]!.indices;
      const per = t.shape[1]! * t.shape[2]!;
      return {
        runtimeName: t.name,
        files: members.map((ci, k) => ({
          name: `${PREFIX}${module}.moka_${which}.${ci}`,
          offset: k * per,
          shape: [t.shape[1]!, t.shape[2]!],
        })),
      };
    }
    const peftSuffix = /^(lora_A|lora_B|moka_gate_proj|mokas_gate_proj)$/.test(suffix)
      ? `${suffix}.weight`
      : suffix;
    return {
      runtimeName: t.name,
      files: [{ name: `${PREFIX}${module}.${peftSuffix}`, offset: 0, shape: t.shape }],
    };
  });
}

/** Writes the adapter's values to `dir` (created if needed). */
export async function saveAdapter(
  dir: string,
  runtime: AdapterRuntime,
  values: ReadonlyMap<string, Float32Array>,
  info: SavedAdapterInfo = {},
): Promise<void> {
  await makeDirs(dir);
  const tensors: SafetensorsTensor[] = [];
  for (const entry of fileLayout(runtime)) {
    const v = values.get(entry.runtimeName);
    const spec = runtime.tensors.find((t) => t.name === entry.runtimeName)!;
    if (!v || v.length !== spec.init.length) {
      throw new UserError(
        `cannot save the adapter: tensor "${entry.runtimeName}" is missing or has the wrong size`,
      );
    }
    for (const f of entry.files) {
      const n = f.shape.reduce((a, b) => a * b, 1);
      tensors.push({ name: f.name, dtype: 'F32', shape: f.shape, data: v.slice(f.offset, f.offset + n) });
    }
  }
  const cfg = pinnedConfig(runtime);
  // adapter_config.json marks a complete directory: remove an old one before writing new weights.
  await rm(join(dir, ADAPTER_CONFIG_FILE), { force: true });
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, {
    format: 'pt',
    moka_adapter_type: cfg.type,
  });
  const llama = runtime.llama;
  const config = {
    format: FORMAT,
    version: ADAPTER_FORMAT_VERSION,
    adapter: cfg,
    base_model_name_or_path: info.baseModel ?? null,
    base_model_fingerprint: info.baseFingerprint ?? null,
    base_model_shape: {
      hidden_size: llama.hiddenSize,
      intermediate_size: llama.intermediateSize,
      num_hidden_layers: llama.numLayers,
      num_attention_heads: llama.numHeads,
      num_key_value_heads: llama.numKvHeads,
      head_dim: llama.headDim,
    },
    trainable_parameters: runtime.plan.totalParams,
    // The fields PEFT users look for first.
    peft_type: { lora: 'LORA', dora: 'LORA', krona: 'LOKR', moka: 'MOKA', mokas: 'MOKAS' }[cfg.type],
    task_type: 'CAUSAL_LM',
    target_modules: cfg.targetModules,
    layers_to_transform: cfg.layersToTransform ?? null,
    ...(cfg.type === 'lora' || cfg.type === 'dora'
      ? {
          r: cfg.r,
          lora_alpha: cfg.alpha,
          use_dora: cfg.type === 'dora',
          use_rslora: cfg.rsLora,
          lora_dropout: cfg.dropout,
          bias: 'none',
        }
      : {}),
  };
  await writeFileAtomic(join(dir, ADAPTER_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
}

export interface LoadedAdapter {
  runtime: AdapterRuntime;
  values: Map<string, Float32Array>;
  baseModel: string | null;
  /** The fingerprint of the base it was trained on (null in adapters saved before moka recorded it). */
  baseFingerprint: string | null;
}

/** base_model_shape field → the LlamaConfig field it must equal. */
const BASE_SHAPE_FIELDS = [
  ['hidden_size', 'hiddenSize'],
  ['intermediate_size', 'intermediateSize'],
  ['num_hidden_layers', 'numLayers'],
  ['num_attention_heads', 'numHeads'],
  ['num_key_value_heads', 'numKvHeads'],
  ['head_dim', 'headDim'],
] as const;

/** Reads and validates `adapter_config.json` of an adapter directory, checking it fits the model. */
export function readAdapterConfig(
  dir: string,
  llama: LlamaConfig,
): { config: AdapterConfig; baseModel: string | null; baseFingerprint: string | null } {
  const configPath = join(dir, ADAPTER_CONFIG_FILE);
  if (!existsSync(dir)) throw new UserError(`adapter directory ${dir} does not exist`);
  if (!existsSync(configPath)) {
    throw new UserError(
      `${dir} has no ${ADAPTER_CONFIG_FILE}: not an adapter directory, or an incomplete write`,
    );
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch (err) {
    throw new UserError(`${configPath} is not valid JSON: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json) || json.format !== FORMAT) {
    throw new UserError(`${configPath} is not a moka adapter config (format "${String(json?.format)}")`);
  }
  if (json.version !== ADAPTER_FORMAT_VERSION) {
    throw new UserError(
      `${configPath} has format version ${JSON.stringify(json.version)}; this moka reads version ` +
        `${ADAPTER_FORMAT_VERSION}. It was written by another moka version: use that one, or re-train the adapter`,
    );
  }
  const shape = json.base_model_shape as Record<string, number> | undefined;
  const differ = shape
    ? BASE_SHAPE_FIELDS.filter(([k, f]) => shape[k] !== undefined && shape[k] !== llama[f])
    : [];
  if (differ.length > 0) {
    throw new UserError(
      `${dir} was trained on a base model of another shape (${differ
        .map(([k, f]) => `${k} ${shape![k]}, this model ${llama[f]}`)
        .join('; ')}). Use the adapter with the base model it was trained on` +
        `${typeof json.base_model_name_or_path === 'string' ? ` (${json.base_model_name_or_path})` : ''}.`,
    );
  }
  const fingerprint = json.base_model_fingerprint;
  return {
    config: parseAdapterConfig(json.adapter, configPath),
    baseModel: (json.base_model_name_or_path as string | null) ?? null,
    baseFingerprint: typeof fingerprint === 'string' ? fingerprint : null,
  };
}

/** Reads an adapter directory for the given base model; checks shapes against the model. */
export async function loadAdapter(
  dir: string,
  llama: LlamaConfig,
  options: AdapterRuntimeOptions = {},
): Promise<LoadedAdapter> {
  const { config, baseModel, baseFingerprint } = readAdapterConfig(dir, llama);
  const runtime = createAdapterRuntime(llama, config, options);
  // The reader's errors already start with the file's path.
  const file = await openSafetensors(join(dir, ADAPTER_WEIGHTS_FILE));
  try {
    const values = new Map<string, Float32Array>();
    const seen = new Set<string>();
    for (const entry of fileLayout(runtime)) {
      const spec = runtime.tensors.find((t) => t.name === entry.runtimeName)!;
      const out = new Float32Array(spec.init.length);
      for (const f of entry.files) {
        if (!file.has(f.name)) throw new UserError(`${dir}: adapter weights lack "${f.name}"`);
        const info = file.info(f.name);
        if (info.shape.join() !== f.shape.join()) {
          throw new UserError(
            `${dir}: "${f.name}" has shape [${info.shape}], the config implies [${f.shape}]`,
          );
        }
        out.set(await file.readFloat32(f.name), f.offset);
        seen.add(f.name);
      }
      values.set(entry.runtimeName, out);
    }
    const extra = file.names().filter((n) => !seen.has(n));
    if (extra.length)
      throw new UserError(`${dir}: unexpected tensors in the adapter weights, e.g. "${extra[0]}"`);
    return { runtime, values, baseModel, baseFingerprint };
  } finally {
    await file.close();
  }
}
