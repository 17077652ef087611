/**
 * What a report reads from a run directory:
 *
 *   evals/<task>.json        results of `evaluate({outDir: <dir>/evals})` (required: at least one)
 *   adapter/                 adapter_config.json + adapter_model.safetensors (absent: the un-adapted base row)
 *   metrics.jsonl            training metrics, one JSON object per line ({step, loss, evalLoss?, …})
 *   train-config.json        the effective training and adapter config
 *   train-summary.json       how training ended, with trainableParameters
 *
 * (the layout `moka train --out <dir>` writes, plus the evals/ folder). Static MoKA/MoKAs gate logits are read
 * from the adapter weights and turned into mixture weights α = softmax(logits) per layer and projection.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { UserError } from '../errors.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../adapters/adapter-files.ts';
import { openSafetensors } from '../model/safetensors.ts';
import type { MetricValue } from './metrics.ts';

export interface TaskScore {
  task: string;
  protocol: 'loglikelihood' | 'generation';
  metrics: Record<string, MetricValue>;
  items: number;
  protocolNote: string;
  shots: number;
}

export interface LossPoint {
  step: number;
  split: 'train' | 'held-out';
  loss: number;
}

export interface GateWeight {
  layer: number;
  projection: string;
  component: number;
  weight: number;
}

export interface RunData {
  name: string;
  dir: string;
  /** Adapter type, or null for the base model. */
  adapterType: string | null;
  /** Trainable parameters of the adapter (0 for the base model). */
  trainableParameters: number;
  tasks: Map<string, TaskScore>;
  losses: LossPoint[];
  gates: GateWeight[];
  /** train-config.json, adapter_config.json's adapter section, train-summary.json (when present). */
  config: Record<string, unknown>;
}

/** The format and version of the evaluation results (`<run>/evals/<task>.json`) evaluate.ts writes and this reads. */
export const EVAL_RESULT_FORMAT = 'moka-eval';
export const EVAL_RESULT_VERSION = 1;

function readJson(path: string, what: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UserError(
      `${path} (${what}) is not valid JSON (${(err as Error).message}); rerun the step that wrote it`,
    );
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UserError(`${path} (${what}) is not a JSON object; rerun the step that wrote it`);
  }
  return parsed as Record<string, unknown>;
}

function readEvals(dir: string): Map<string, TaskScore> {
  const evalDir = join(dir, 'evals');
  if (!existsSync(evalDir) || !statSync(evalDir).isDirectory()) {
    throw new UserError(
      `run directory ${dir} has no evals/ folder; run \`moka eval --out ${join(dir, 'evals')}\` (or evaluate() ` +
        'with outDir <dir>/evals) first',
    );
  }
  const out = new Map<string, TaskScore>();
  for (const f of readdirSync(evalDir)
    .filter((n) => n.endsWith('.json'))
    .sort()) {
    const path = join(evalDir, f);
    const j = readJson(path, 'an evaluation result');
    if (
      j.format !== EVAL_RESULT_FORMAT ||
      typeof j.task !== 'string' ||
      !j.metrics ||
      typeof j.metrics !== 'object'
    ) {
      throw new UserError(
        `${path} is not a moka evaluation result (format "${EVAL_RESULT_FORMAT}"); remove it or rerun moka eval`,
      );
    }
    if (j.version !== EVAL_RESULT_VERSION) {
      throw new UserError(
        `${path} is a moka evaluation result of version ${JSON.stringify(j.version)}; this moka reads version ` +
          `${EVAL_RESULT_VERSION}: report it with the moka that wrote it, or rerun moka eval`,
      );
    }
    out.set(j.task, {
      task: j.task,
      protocol: j.protocol as TaskScore['protocol'],
      metrics: j.metrics as Record<string, MetricValue>,
      items: Number(j.items),
      protocolNote: String(j.protocolNote ?? ''),
      shots: Number(j.shots ?? 0),
    });
  }
  if (out.size === 0) {
    throw new UserError(`${evalDir} holds no <task>.json results; run moka eval --out ${evalDir} first`);
  }
  return out;
}

function readLosses(dir: string): LossPoint[] {
  const path = join(dir, 'metrics.jsonl');
  if (!existsSync(path)) return [];
  const out: LossPoint[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(line);
      } catch {
        throw new UserError(`${path} line ${i + 1} is not valid JSON; the training log is damaged`);
      }
      const step = Number(m.step);
      if (typeof m.loss === 'number' && Number.isFinite(m.loss))
        out.push({ step, split: 'train', loss: m.loss });
      if (typeof m.evalLoss === 'number' && Number.isFinite(m.evalLoss)) {
        out.push({ step, split: 'held-out', loss: m.evalLoss });
      }
    });
  return out;
}

const GATE = /^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.(?:moka|mokas)_gate$/;

async function readGates(adapterDir: string): Promise<GateWeight[]> {
  const path = join(adapterDir, ADAPTER_WEIGHTS_FILE);
  if (!existsSync(path)) return [];
  const file = await openSafetensors(path).catch((err: Error) => {
    throw new UserError(`${path}: ${err.message}`);
  });
  try {
    const out: GateWeight[] = [];
    for (const name of file.names()) {
      const m = GATE.exec(name);
      if (!m) continue;
      const logits = await file.readFloat32(name);
      const max = Math.max(...logits);
      const e = Array.from(logits, (x) => Math.exp(x - max));
      const z = e.reduce((a, b) => a + b, 0);
      e.forEach((v, component) =>
        out.push({ layer: Number(m[1]), projection: m[2]!, component, weight: v / z }),
      );
    }
    return out.sort(
      (a, b) => a.layer - b.layer || a.projection.localeCompare(b.projection) || a.component - b.component,
    );
  } finally {
    await file.close();
  }
}

/** Reads one run directory (see the module comment); `name` is its display name. */
export async function readRun(dir: string, name?: string): Promise<RunData> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new UserError(`run directory ${dir} does not exist; give directories that hold evals/<task>.json`);
  }
  const tasks = readEvals(dir);
  const adapterDir = join(dir, 'adapter');
  const config: Record<string, unknown> = {};
  let adapterType: string | null = null;
  let trainableParameters = 0;
  if (existsSync(join(adapterDir, ADAPTER_CONFIG_FILE))) {
    const a = readJson(join(adapterDir, ADAPTER_CONFIG_FILE), 'the adapter config');
    const section = (a.adapter ?? {}) as Record<string, unknown>;
    adapterType = typeof section.type === 'string' ? section.type : 'adapter';
    trainableParameters = Number(a.trainable_parameters ?? 0);
    config.adapter = section;
  }
  const summaryPath = join(dir, 'train-summary.json');
  if (existsSync(summaryPath)) {
    const s = readJson(summaryPath, 'the training summary');
    config.summary = s;
    if (typeof s.trainableParameters === 'number') trainableParameters = s.trainableParameters;
  }
  const configPath = join(dir, 'train-config.json');
  if (existsSync(configPath)) config.training = readJson(configPath, 'the training config').training ?? null;
  return {
    name: name ?? basename(dir.replace(/[/\\]+$/, '')),
    dir,
    adapterType,
    trainableParameters,
    tasks,
    losses: readLosses(dir),
    gates: adapterType ? await readGates(adapterDir) : [],
    config,
  };
}
