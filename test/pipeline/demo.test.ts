/**
 * `moka demo` end to end, as a user runs it: a generated tiny model, quantized, MoKA and LoRA trained, all three
 * evaluated, and a report. Both adapters must beat the un-adapted base on the synthetic task by a clear margin:
 * the base is a random model (about 25% on four choices), training states each fact 4 times per epoch.
 */
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runMoka } from '../helpers/run-moka.ts';

it('moka demo trains MoKA and LoRA that clearly beat the base model, and writes the report', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moka-demo-'));
  const r = runMoka(['demo', '--dir', dir]);
  expect(r.stderr.slice(-2000) + r.stdout.slice(-2000)).toContain('report: ');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/TINY RANDOM LLaMA/);
  expect(r.stdout).toMatch(/moka run examples\/compare-adapters\.json/);
  const [runId] = readdirSync(join(dir, 'runs'));
  const runDir = join(dir, 'runs', runId!);
  const acc = (v: string) =>
    (
      JSON.parse(
        readFileSync(join(runDir, v === 'base' ? 'base' : `variants/${v}`, 'eval-summary.json'), 'utf8'),
      ) as {
        tasks: { metrics: { acc: { value: number } } }[];
      }
    ).tasks[0]!.metrics.acc.value;
  const base = acc('base');
  // Margin: 0.25 = 6 of 24 items; the base scores about chance (0.25 ± 0.09).
  expect(acc('moka')).toBeGreaterThanOrEqual(base + 0.25);
  expect(acc('lora')).toBeGreaterThanOrEqual(base + 0.25);
  const html = join(runDir, 'report', 'report.html');
  expect(statSync(html).size).toBeGreaterThan(1000);
  expect(r.stdout).toContain(`report: ${html}`);
  for (const v of ['base', 'moka', 'lora']) expect(r.stdout).toMatch(new RegExp(`^${v}\\b`, 'm'));
}, 300_000);
