/** report.md: the accuracy table, the protocols and the run configs, as GitHub-flavoured Markdown. */
import { accuracyTable, type ReportData } from './report-model.ts';

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function renderMarkdown(data: ReportData): string {
  const rows = accuracyTable(data);
  const out: string[] = [];
  out.push('# Evaluation report', '');
  out.push(
    `Accuracy in % (± standard error); in brackets the difference to the base row${data.base ? ` (${data.base})` : ''} ` +
      'in points. `*` marks adapter runs on the Pareto front of trainable parameters vs average accuracy.',
    '',
  );
  out.push(`| ${rows[0]!.map(cell).join(' | ')} |`);
  out.push(`|${rows[0]!.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`);
  for (const r of rows.slice(1)) out.push(`| ${r.map(cell).join(' | ')} |`);
  out.push('', '## Tasks and protocols', '');
  for (const t of data.tasks) {
    out.push(`- **${t.task}** (${t.items} items, ${t.shots}-shot, ${t.metric}): ${t.protocolNote}`);
  }
  out.push('', '## Runs', '');
  for (const r of data.runs) {
    out.push(`### ${r.name}`, '', `Directory: \`${r.dir}\``, '');
    if (Object.keys(r.config).length > 0) {
      out.push('```json', JSON.stringify(r.config, null, 2), '```', '');
    }
  }
  out.push(`_Generated ${data.createdAt} by moka report._`, '');
  return out.join('\n');
}
