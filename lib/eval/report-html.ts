/**
 * report.html: one self-contained page (inline CSS and SVG, no scripts, no network): the accuracy table with
 * deltas to the base row, the charts (SVG from charts.ts), the task protocols and the run configs.
 */
import { formatDelta, formatParams, formatScore, type ReportData } from './report-model.ts';

export interface ReportCharts {
  accuracy: string | null;
  loss: string | null;
  gates: string | null;
}

function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

/** CSS class of a delta: green up, red down, grey for none. */
const deltaClass = (d: number) => (d > 0 ? 'up' : d < 0 ? 'down' : 'same');

const STYLE = `
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; margin: 0; background: #fafafa; }
main { max-width: 1400px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.lede, p.note { color: #555; margin: 4px 0 12px; }
table { font-size: 13.5px; border-collapse: collapse; background: white; box-shadow: 0 1px 2px rgba(0,0,0,.08); font-variant-numeric: tabular-nums; }
th, td { padding: 5px 7px; vertical-align: top; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f0f0f3; font-weight: 600; } th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
tr.base td { background: #f7f7f9; } tr.pareto td:first-child::after { content: " ★"; color: #b58900; }
.se, .metric { color: #888; font-size: 12px; font-weight: normal; } .table-wrap { overflow-x: auto; } .delta { font-size: 12px; margin-left: 4px; } .up { color: #1a7f37; } .down { color: #c62828; } .same { color: #888; }
.chart { background: white; box-shadow: 0 1px 2px rgba(0,0,0,.08); padding: 12px; overflow-x: auto; }
details { background: white; margin: 6px 0; padding: 6px 10px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
pre { font-size: 12px; overflow-x: auto; } code { font-size: 13px; }
`;

function scoreCell(run: ReportData['runs'][number], task: string): string {
  const m = run.scores[task] ?? null;
  if (m === null) return '<td>—</td>';
  const [value, se] = formatScore(m).split(' ± ');
  const d = run.adapterType ? (run.deltaToBase[task] ?? null) : null;
  const delta = d === null ? '' : `<span class="delta ${deltaClass(d)}">${escapeHtml(formatDelta(d))}</span>`;
  return `<td>${value}${delta}${se ? `<br><span class="se">± ${se}</span>` : ''}</td>`;
}

function table(data: ReportData): string {
  const head = [
    'run',
    'adapter',
    'trainable',
    ...data.tasks.map((t) => `${escapeHtml(t.task)}<br><span class="metric">${escapeHtml(t.metric)}</span>`),
    'average',
  ];
  const rows = data.runs.map((r) => {
    const cls = [r.adapterType === null ? 'base' : '', r.pareto ? 'pareto' : ''].filter(Boolean).join(' ');
    const avg =
      r.average === null
        ? '—'
        : `${(100 * r.average).toFixed(2)}${
            r.adapterType && r.averageDelta !== null
              ? `<span class="delta ${deltaClass(r.averageDelta)}">${escapeHtml(formatDelta(r.averageDelta))}</span>`
              : ''
          }`;
    return (
      `<tr class="${cls}" data-run="${escapeHtml(r.name)}"><td>${escapeHtml(r.name)}</td>` +
      `<td>${escapeHtml(r.adapterType ?? 'base')}</td>` +
      `<td>${r.adapterType ? formatParams(r.trainableParameters) : '0'}</td>` +
      data.tasks.map((t) => scoreCell(r, t.task)).join('') +
      `<td><strong>${avg}</strong></td></tr>`
    );
  });
  return (
    `<div class="table-wrap"><table id="accuracy-table"><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}` +
    `</tr></thead><tbody>${rows.join('')}</tbody></table></div>`
  );
}

function section(id: string, title: string, body: string | null, empty: string): string {
  return `<section id="${id}"><h2>${escapeHtml(title)}</h2>${
    body === null ? `<p class="note">${escapeHtml(empty)}</p>` : `<div class="chart">${body}</div>`
  }</section>`;
}

export function renderHtml(data: ReportData, charts: ReportCharts): string {
  const tasks = data.tasks
    .map(
      (t) =>
        `<li><strong>${escapeHtml(t.task)}</strong> — ${t.items} items, ${t.shots}-shot, ${escapeHtml(t.metric)}: ` +
        `${escapeHtml(t.protocolNote)}</li>`,
    )
    .join('');
  const configs = data.runs
    .map(
      (r) =>
        `<details><summary><strong>${escapeHtml(r.name)}</strong> — <code>${escapeHtml(r.dir)}</code></summary>` +
        `<pre>${escapeHtml(JSON.stringify(r.config, null, 2))}</pre></details>`,
    )
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>moka evaluation report</title><style>${STYLE}</style></head>
<body><main>
<h1>Evaluation report</h1>
<p class="lede">${data.runs.length} runs on ${data.tasks.length} tasks${data.base ? `; base row: <strong>${escapeHtml(data.base)}</strong>` : ''}. Generated ${escapeHtml(data.createdAt)} by <code>moka report</code>.</p>
<section id="accuracy"><h2>Accuracy (%)</h2>${table(data)}
<p class="note">± standard error; coloured numbers: difference to the base row in points; ★ Pareto front of trainable parameters vs average accuracy.</p></section>
${section('chart-accuracy', 'Accuracy vs trainable parameters', charts.accuracy, 'No adapter runs with trainable parameters and results on every task.')}
${section('chart-loss', 'Loss curves', charts.loss, 'No training metrics (metrics.jsonl) in these runs.')}
${section('chart-gates', 'MoKA gate weights', charts.gates, 'No MoKA/MoKAs run with static gates.')}
<section id="tasks"><h2>Tasks and protocols</h2><ul>${tasks}</ul></section>
<section id="configs"><h2>Run configs</h2>${configs}</section>
</main></body></html>
`;
}
