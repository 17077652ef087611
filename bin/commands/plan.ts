/**
 * `moka plan`: shows what an adapter would look like on a model before anything is trained — component shapes
 * per projection type, trainable parameters, reachable rank, and how the adapter types compare on the same
 * targets. Reads only config.json, so it works on a laptop for any model size.
 */
import type { Command } from 'commander';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../../lib/errors.ts';
import { parseLlamaConfig, type LlamaConfig } from '../../lib/model/config.ts';
import {
  ADAPTER_TYPES,
  adapterScale,
  parseAdapterConfig,
  type AdapterConfig,
  type AdapterType,
} from '../../lib/adapters/adapter-config.ts';
import { baseModelParamCount } from '../../lib/adapters/param-count.ts';
import { formatInteger, formatParamCount, parseParamCount } from '../../lib/adapters/param-units.ts';
import {
  compareAdapterTypes,
  describeComponent,
  kroneckerCandidates,
  loraRankForBudget,
  planAdapter,
  type AdapterComparison,
  type AdapterPlan,
  type ProjectionPlan,
} from '../../lib/adapters/planner.ts';
import { formatKroneckerShape } from '../../lib/adapters/kronecker-shapes.ts';
import { parseLayerList, resolveTargets } from '../../lib/adapters/targets.ts';
import { parseInteger, parseNumber, readJsonFile } from './cli-helpers.ts';

interface PlanOptions {
  model?: string;
  config?: string;
  adapter?: string;
  adapterConfig?: string;
  budget?: string;
  count?: string;
  targets?: string;
  layers?: string;
  r?: string;
  gate?: string;
  decomposeFactor?: string;
  listShapes?: boolean;
  json?: boolean;
}

/** The model config from --model DIR (DIR/config.json) or --config FILE, exactly one of them. */
function loadModel(opts: PlanOptions): { llama: LlamaConfig; source: string } {
  if ((opts.model === undefined) === (opts.config === undefined)) {
    throw new UserError(
      'give the model as either --model DIR (a Hugging Face model folder) or --config FILE (its config.json)',
    );
  }
  let file = opts.config!;
  if (opts.model !== undefined) {
    let isDir = false;
    try {
      isDir = statSync(opts.model).isDirectory();
    } catch {
      throw new UserError(`--model ${opts.model}: no such directory`);
    }
    if (!isDir)
      throw new UserError(
        `--model ${opts.model} is a file; pass a model folder, or use --config ${opts.model}`,
      );
    file = join(opts.model, 'config.json');
  }
  return { llama: parseLlamaConfig(readJsonFile(file, 'model config'), file), source: file };
}

const onlyFor = (flag: string, types: AdapterType[], type: AdapterType) => {
  if (!types.includes(type)) throw new UserError(`${flag} applies to ${types.join(', ')}, not ${type}`);
};

/** Builds the adapter config from --adapter-config and the flags (flags win), then parses it once. */
function buildAdapterConfig(opts: PlanOptions, llama: LlamaConfig): AdapterConfig {
  let raw: Record<string, unknown> = {};
  let source = 'command-line flags';
  if (opts.adapterConfig !== undefined) {
    const json = readJsonFile(opts.adapterConfig, 'adapter config');
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
      throw new UserError(`${opts.adapterConfig} must hold a JSON object such as {"type": "moka"}`);
    }
    raw = { ...(json as Record<string, unknown>) };
    source = `${opts.adapterConfig} (with command-line flags)`;
  }
  if (opts.adapter !== undefined && raw.type !== undefined && raw.type !== opts.adapter) {
    throw new UserError(
      `--adapter ${opts.adapter} contradicts "type": ${JSON.stringify(raw.type)} in ${opts.adapterConfig}`,
    );
  }
  const type = (opts.adapter ?? raw.type ?? 'moka') as AdapterType;
  if (!ADAPTER_TYPES.includes(type)) {
    throw new UserError(
      `--adapter ${String(type)}: unknown adapter type; valid: ${ADAPTER_TYPES.join(', ')}`,
    );
  }
  raw.type = type;
  if (opts.targets !== undefined) raw.targetModules = opts.targets;
  if (opts.layers !== undefined) raw.layersToTransform = parseLayerList(opts.layers);
  const plan = () => ({ ...((raw.plan as Record<string, unknown> | undefined) ?? {}) });
  if (opts.count !== undefined) {
    onlyFor('--count', ['moka', 'mokas'], type);
    raw.plan = { ...plan(), count: parseInteger(opts.count, '--count', 1) };
  }
  if (opts.gate !== undefined) {
    onlyFor('--gate', ['moka', 'mokas'], type);
    raw.gate = opts.gate;
  }
  if (opts.decomposeFactor !== undefined) {
    onlyFor('--decompose-factor', ['krona'], type);
    raw.decomposeFactor = parseNumber(opts.decomposeFactor, '--decompose-factor');
  }
  if (opts.r !== undefined) {
    onlyFor('--r', ['lora', 'dora', 'krona'], type);
    raw.r = parseInteger(opts.r, '--r', 1);
  }
  if (opts.budget !== undefined) {
    const budget = parseParamCount(opts.budget, '--budget');
    if (type === 'krona') {
      throw new UserError(
        `--budget applies to moka, mokas, lora and dora; KronA's size is fixed by --decompose-factor and --r`,
      );
    }
    if (type === 'moka' || type === 'mokas') raw.plan = { ...plan(), budget };
    else {
      if (opts.r !== undefined)
        throw new UserError(`--budget and --r both set the ${type} size; give one of them`);
      // The rank depends on the targets, so resolve them first with the rank left at its default.
      const targets = resolveTargets(llama, parseAdapterConfig(raw, source));
      raw.r = loraRankForBudget(targets, budget, type === 'dora');
    }
  }
  return parseAdapterConfig(raw, source);
}

function describeAdapter(cfg: AdapterConfig): string {
  const s = adapterScale(cfg);
  switch (cfg.type) {
    case 'moka':
    case 'mokas':
      return `gate ${cfg.gate} (init ${cfg.gateInit}), scale ${s}, init ${cfg.init}`;
    case 'krona':
      return `decomposeFactor ${cfg.decomposeFactor}${cfg.r !== undefined ? `, r ${cfg.r}` : ''}, scale ${s}, init ${cfg.init}`;
    case 'lora':
    case 'dora':
      return `r ${cfg.r}, alpha ${cfg.alpha}${cfg.rsLora ? ' (rsLoRA)' : ''}, scale ${Number(s.toFixed(4))}`;
  }
}

/** Left-aligns text columns and right-aligns numeric ones. */
function table(rows: string[][], numeric: boolean[]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => [...r[c]!].length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) =>
          numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]! + cell.length - [...cell].length),
        )
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function gateLabel(plan: AdapterPlan, p: ProjectionPlan): string {
  const cfg = plan.config;
  if (cfg.type !== 'moka' && cfg.type !== 'mokas') return '';
  const r = p.components.length;
  return cfg.gate === 'token' ? `gate W_g (${r}x${p.in})` : `gate (${r} logits)`;
}

function printPlan(
  plan: AdapterPlan,
  llama: LlamaConfig,
  source: string,
  baseParams: number,
  comparison: AdapterComparison[],
  comparisonBudget: number | undefined,
): string {
  const lines: string[] = [];
  const cfg = plan.config;
  const layerWords =
    plan.layers.length === plan.numLayers
      ? `all ${plan.numLayers} layers`
      : `layers ${plan.layers.join(',')} of ${plan.numLayers}`;
  lines.push(
    `model    ${source}: ${llama.numLayers} layers, hidden ${llama.hiddenSize}, intermediate ${llama.intermediateSize}, ${formatParamCount(baseParams)} parameters`,
  );
  lines.push(`adapter  ${cfg.type}: ${describeAdapter(cfg)}`);
  lines.push(`targets  ${plan.projections.map((p) => p.projection).join(', ')} in ${layerWords}`);
  if (plan.budget !== undefined)
    lines.push(`budget   ${formatInteger(plan.budget)} (${formatParamCount(plan.budget)})`);
  lines.push('');
  const rows: string[][] = [['projection', '[out x in]', 'component', 'params', 'max rank']];
  for (const p of plan.projections) {
    p.components.forEach((c, i) => {
      rows.push([
        i === 0 ? p.projection : '',
        i === 0 ? `${p.out}x${p.in}` : '',
        describeComponent(c, p.out, p.in),
        formatInteger(c.params),
        formatInteger(c.maxRank),
      ]);
    });
    if (p.gateParams > 0) rows.push(['', '', gateLabel(plan, p), formatInteger(p.gateParams), '']);
    if (p.magnitudeParams > 0)
      rows.push(['', '', 'magnitude (one per output row)', formatInteger(p.magnitudeParams), '']);
    rows.push([
      '',
      '',
      `per layer${p.source === 'explicit' ? ' (explicit shapes)' : ''}`,
      formatInteger(p.paramsPerLayer),
      formatInteger(p.maxRank),
    ]);
  }
  lines.push(table(rows, [false, false, false, true, true]));
  lines.push('');
  const pct = ((100 * plan.totalParams) / baseParams).toPrecision(2);
  lines.push(
    `total    ${formatInteger(plan.totalParams)} trainable parameters (${formatParamCount(plan.totalParams)}): ` +
      `${formatInteger(plan.paramsPerLayer)} per layer × ${plan.layers.length} layers, ${pct}% of the base model`,
  );
  const cmp = comparison
    .map(
      (c) =>
        `${c.type} ${c.totalParams === null ? 'n/a' : formatParamCount(c.totalParams)}${c.note !== 'defaults' && c.totalParams !== null ? ` (${c.note})` : ''}`,
    )
    .join(' · ');
  lines.push(
    `compare  ${cmp}  [same targets and layers; each type's defaults${comparisonBudget !== undefined ? `, sized to ${formatParamCount(comparisonBudget)} where it can be` : ''}]`,
  );
  return lines.join('\n');
}

function printShapes(plan: AdapterPlan): string {
  const out: string[] = [''];
  for (const p of plan.projections) {
    out.push(`valid MoKA component shapes for ${p.projection} [${p.out}x${p.in}] (cheapest first):`);
    const rows = [['shape', 'params', 'max rank']];
    for (const o of kroneckerCandidates(p.out, p.in)) {
      rows.push([formatKroneckerShape(o.shape), formatInteger(o.params), formatInteger(o.maxRank)]);
    }
    out.push(table(rows, [false, true, true]), '');
  }
  return out.join('\n');
}

export function registerPlan(program: Command): void {
  program
    .command('plan')
    .description(
      'plan adapter shapes on a model: components per projection, trainable parameters, reachable rank',
    )
    .option('--model <dir>', 'Hugging Face model folder (reads <dir>/config.json)')
    .option('--config <file>', 'a model config.json')
    .option('--adapter <type>', `adapter type: ${ADAPTER_TYPES.join(', ')} (default moka)`)
    .option('--adapter-config <file>', 'adapter config JSON; the flags below override its fields')
    .option(
      '--budget <params>',
      'trainable-parameter budget, e.g. 5M or 500k (moka, mokas; lora/dora pick r)',
    )
    .option('--count <n>', 'components per projection (moka, mokas)')
    .option(
      '--targets <list>',
      'projections to adapt, comma-separated, or all-linear (default q_proj,k_proj,v_proj,o_proj)',
    )
    .option('--layers <list>', 'layer indices to adapt, e.g. 0,1,2 or 0-15 (default all)')
    .option('--r <n>', 'rank (lora, dora; krona: low-rank LoKr factor as in PEFT)')
    .option('--gate <kind>', 'moka/mokas gate: static, token or none')
    .option('--decompose-factor <f>', 'krona: PEFT LoKr decompose_factor (-1 = split near the square root)')
    .option('--list-shapes', 'also list every valid MoKA component shape per projection')
    .option('--json', 'print JSON instead of tables')
    .action((opts: PlanOptions) => {
      const { llama, source } = loadModel(opts);
      const config = buildAdapterConfig(opts, llama);
      const plan = planAdapter(llama, config);
      const baseParams = baseModelParamCount(llama);
      const comparisonBudget =
        plan.budget ?? (opts.budget !== undefined ? parseParamCount(opts.budget, '--budget') : undefined);
      const comparison = compareAdapterTypes(llama, {
        targetModules: config.targetModules,
        layersToTransform: config.layersToTransform,
        budget: comparisonBudget,
      });
      if (opts.json) {
        const report = {
          model: {
            source,
            numLayers: llama.numLayers,
            hiddenSize: llama.hiddenSize,
            intermediateSize: llama.intermediateSize,
            baseParams,
          },
          adapter: { ...config, scale: adapterScale(config) },
          ...(plan.budget !== undefined ? { budget: plan.budget } : {}),
          projections: plan.projections.map((p) => ({
            ...p,
            components: p.components.map((c) => ({ ...c, description: describeComponent(c, p.out, p.in) })),
          })),
          totals: {
            trainableParams: plan.totalParams,
            paramsPerLayer: plan.paramsPerLayer,
            layers: plan.layers,
            fractionOfBase: plan.totalParams / baseParams,
          },
          comparison,
          targets: plan.targets,
          ...(opts.listShapes
            ? {
                shapes: Object.fromEntries(
                  plan.projections.map((p) => [p.projection, kroneckerCandidates(p.out, p.in)]),
                ),
              }
            : {}),
        };
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return;
      }
      let text = printPlan(plan, llama, source, baseParams, comparison, comparisonBudget);
      if (opts.listShapes) text += `\n${printShapes(plan)}`;
      process.stdout.write(`${text}\n`);
    });
}
