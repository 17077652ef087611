/**
 * The report's charts as Vega-Lite specs, rendered to SVG strings in Node by Vega's headless renderer (no DOM,
 * no canvas; text widths are estimated). Each chart's data is inline, so the SVG stands alone.
 *
 *   accuracyChart   average accuracy vs trainable parameters (log x), one point per adapter run, the Pareto front
 *                   as a line through its runs (their points drawn filled), the base model as a dashed rule
 *   lossChart       training and held-out loss per step, one colour per run, dashed for held-out
 *   gateChart       MoKA/MoKAs gate weights α per layer (rows) and projection · component (columns), per run
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ReportData } from './report-model.ts';

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

/** Renders a Vega-Lite spec to an SVG string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Points of the accuracy chart: adapter runs with parameters and an average. */
function accuracyPoints(data: ReportData) {
  return data.runs
    .filter((r) => r.adapterType !== null && r.trainableParameters > 0 && r.average !== null)
    .map((r) => ({
      run: r.name,
      adapter: r.adapterType!,
      params: r.trainableParameters,
      accuracy: 100 * r.average!,
      pareto: r.pareto,
    }));
}

export function accuracyChart(data: ReportData): TopLevelSpec | null {
  const points = accuracyPoints(data);
  if (points.length === 0) return null;
  const base = data.runs.find((r) => r.name === data.base);
  const front = points.filter((p) => p.pareto).sort((a, b) => a.params - b.params);
  const x = {
    field: 'params',
    type: 'quantitative',
    scale: { type: 'log' },
    title: 'trainable parameters (log scale)',
  } as const;
  // Padding keeps one-value domains (all runs equal) readable; one decimal is what the table shows too.
  const y = {
    field: 'accuracy',
    type: 'quantitative',
    scale: { zero: false, nice: true, padding: 24 },
    axis: { format: '.1f' },
    title: 'average accuracy (%)',
  } as const;
  return {
    $schema: SCHEMA,
    width: 520,
    height: 300,
    title: 'Accuracy vs trainable parameters',
    layer: [
      {
        name: 'pareto_front',
        data: { values: front },
        mark: { type: 'line', color: '#888', strokeDash: [2, 2] },
        encoding: { x, y },
      },
      ...(base?.average !== null && base !== undefined
        ? [
            {
              name: 'base_rule',
              data: { values: [{ accuracy: 100 * base.average!, label: `base: ${base.name}` }] },
              layer: [
                { mark: { type: 'rule', strokeDash: [6, 4], color: '#444' }, encoding: { y } },
                {
                  mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#444', x: 0 },
                  encoding: { y, text: { field: 'label' } },
                },
              ],
            },
          ]
        : []),
      {
        name: 'runs',
        data: { values: points },
        mark: { type: 'point', size: 90, strokeWidth: 2 },
        encoding: {
          x,
          y,
          color: { field: 'adapter', type: 'nominal', title: 'adapter' },
          shape: { field: 'adapter', type: 'nominal' },
          fill: {
            condition: { test: 'datum.pareto', field: 'adapter', type: 'nominal' },
            value: 'white',
          },
          tooltip: [{ field: 'run' }, { field: 'params', format: ',' }, { field: 'accuracy', format: '.2f' }],
        },
      },
      {
        name: 'run_labels',
        data: { values: points },
        mark: { type: 'text', dy: -12, fontSize: 11 },
        encoding: { x, y, text: { field: 'run' } },
      },
    ],
  } as TopLevelSpec;
}

export function lossChart(data: ReportData): TopLevelSpec | null {
  if (data.losses.length === 0) return null;
  return {
    $schema: SCHEMA,
    width: 520,
    height: 260,
    title: 'Training and held-out loss',
    data: { values: data.losses },
    mark: { type: 'line', strokeWidth: 1.5 },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step', axis: { tickMinStep: 1, format: 'd' } },
      y: { field: 'loss', type: 'quantitative', scale: { zero: false }, title: 'loss (nats/token)' },
      color: { field: 'run', type: 'nominal' },
      strokeDash: {
        field: 'split',
        type: 'nominal',
        title: 'split',
        sort: ['train', 'held-out'],
      },
      detail: { field: 'split' },
    },
  } as TopLevelSpec;
}

/** One heatmap per run with static gates, stacked vertically. */
export function gateChart(data: ReportData): TopLevelSpec | null {
  if (data.gates.length === 0) return null;
  const values = data.gates.map((g) => ({ ...g, column: `${g.projection}·${g.component}` }));
  return {
    $schema: SCHEMA,
    title: 'MoKA gate weights α = softmax(gate) per layer and projection · component',
    data: { values },
    facet: { row: { field: 'run', type: 'nominal', title: null } },
    spec: {
      width: { step: 22 },
      height: { step: 18 },
      mark: 'rect',
      encoding: {
        x: { field: 'column', type: 'ordinal', title: 'projection · component', sort: null },
        y: { field: 'layer', type: 'ordinal', title: 'layer' },
        color: {
          field: 'weight',
          type: 'quantitative',
          title: 'α',
          scale: { domain: [0, 1], scheme: 'blues' },
        },
        tooltip: [
          { field: 'layer' },
          { field: 'projection' },
          { field: 'component' },
          { field: 'weight', format: '.3f' },
        ],
      },
    },
    resolve: { scale: { x: 'independent' } },
  } as TopLevelSpec;
}
