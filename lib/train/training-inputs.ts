/**
 * A run's training and adapter settings assembled from what the user gave: a config file (`{"training": {...},
 * "adapter": {...}}`, or a bare training section) and overrides (`--set field=value`, `--learning-rate`, …), in that
 * order. Every problem is blamed on what caused it: the file for the file's contents (each section checked on its
 * own, unknown sections and fields listed with the valid ones), and the flag for an override (checked against the
 * file's settings plus the overrides before it, so the first override that breaks them is the one named).
 */
import { UserError } from '../errors.ts';
import {
  ADAPTER_TYPES,
  defaultAdapterConfig,
  parseAdapterConfig,
  type AdapterConfig,
  type AdapterType,
} from '../adapters/adapter-config.ts';
import { TRAIN_CONFIG_FIELDS, checkTrainConfig, parseTrainConfig, type TrainConfig } from './train-config.ts';

/** The sections of a run-style config file. */
const CONFIG_FILE_SECTIONS = ['training', 'adapter'] as const;

export interface TrainingOverride {
  /** How the user wrote it, for messages: "--set maxSteps=abc", "--learning-rate -1". */
  flag: string;
  field: string;
  value: unknown;
}

export interface TrainingInputs {
  /** A config file: its path (named in messages) and its parsed JSON. */
  file?: { path: string; json: unknown };
  /** Training-field overrides, applied in order after the file. */
  overrides?: readonly TrainingOverride[];
  /** An adapter type whose defaults to use (`--adapter`); must agree with the file's adapter section. */
  adapterType?: string;
  /** The flag that gives the adapter type, for messages (default "--adapter"). */
  adapterFlag?: string;
}

/** `field=value` (`--set`), the value parsed as JSON when it is JSON (numbers, booleans, null), else a string. */
export function parseSetting(setting: string, flag = '--set'): TrainingOverride {
  const at = setting.indexOf('=');
  if (at <= 0) throw new UserError(`${flag} expects field=value (e.g. learningRate=1e-3), got "${setting}"`);
  const raw = setting.slice(at + 1);
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    /* a plain string such as schedule=cosine */
  }
  return { flag: `${flag} ${setting}`, field: setting.slice(0, at).trim(), value };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Splits a config file into its training section and adapter section, refusing unknown top-level keys. */
function fileSections(path: string, json: unknown): { training: unknown; adapter: unknown } {
  if (!isObject(json)) {
    throw new UserError(`${path} must hold a JSON object ({"training": {...}, "adapter": {...}})`);
  }
  const runStyle = CONFIG_FILE_SECTIONS.some((s) => s in json);
  if (runStyle) {
    const unknown = Object.keys(json).filter((k) => !(CONFIG_FILE_SECTIONS as readonly string[]).includes(k));
    if (unknown.length > 0) {
      throw new UserError(
        `${path}: unknown section(s) ${unknown.map((k) => `"${k}"`).join(', ')}; valid sections: ` +
          `${CONFIG_FILE_SECTIONS.join(', ')}`,
      );
    }
    return { training: json.training, adapter: json.adapter };
  }
  // A bare training section: a key that is neither a field nor a section is most likely a misspelt section.
  const unknown = Object.keys(json).filter((k) => !TRAIN_CONFIG_FIELDS.includes(k));
  if (unknown.length > 0) {
    throw new UserError(
      `${path}: unknown field(s) ${unknown.map((k) => `"${k}"`).join(', ')}; a config file holds the sections ` +
        `${CONFIG_FILE_SECTIONS.join(', ')}, or the training fields ${TRAIN_CONFIG_FIELDS.join(', ')}`,
    );
  }
  return { training: json, adapter: undefined };
}

/** Training and adapter config from a file and overrides; see the module comment. */
export function resolveTrainingInputs(inputs: TrainingInputs): {
  training: TrainConfig;
  adapter: AdapterConfig;
} {
  const sections = inputs.file ? fileSections(inputs.file.path, inputs.file.json) : null;
  const fromFile = sections?.training ?? {};
  if (!isObject(fromFile))
    throw new UserError(`${inputs.file!.path}: "training" must be an object of fields`);
  // The file alone first, so that its own problems name the file and not a flag.
  let training = parseTrainConfig(fromFile, `${inputs.file?.path ?? 'config'} training`);
  const applied: Record<string, unknown> = { ...fromFile };
  for (const o of inputs.overrides ?? []) {
    if (!TRAIN_CONFIG_FIELDS.includes(o.field)) {
      throw new UserError(
        `${o.flag}: unknown training field "${o.field}"; known fields: ${TRAIN_CONFIG_FIELDS.join(', ')}`,
      );
    }
    applied[o.field] = o.value;
    const r = checkTrainConfig(applied);
    if ('problems' in r) {
      // "maxSteps: maxSteps must be a number" reads as "maxSteps must be a number" after the flag.
      const own = `${o.field}: ${o.field} `;
      const problems = r.problems.map((p) => (p.startsWith(own) ? p.slice(o.field.length + 2) : p));
      throw new UserError(`${o.flag}: ${problems.join('; ')}`);
    }
    training = r.config;
  }

  const flag = inputs.adapterFlag ?? '--adapter';
  const type = inputs.adapterType;
  if (type !== undefined && !ADAPTER_TYPES.includes(type as AdapterType)) {
    throw new UserError(`${flag} must be one of ${ADAPTER_TYPES.join(', ')}, got "${type}"`);
  }
  let adapter: AdapterConfig;
  if (sections?.adapter !== undefined) {
    adapter = parseAdapterConfig(sections.adapter, `${inputs.file!.path} adapter`);
    if (type !== undefined && type !== adapter.type) {
      throw new UserError(
        `${flag} ${type} contradicts the "${adapter.type}" adapter of ${inputs.file!.path}; give one of them`,
      );
    }
  } else {
    adapter = defaultAdapterConfig((type ?? 'moka') as AdapterType);
  }
  return { training, adapter };
}
