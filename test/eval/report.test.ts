/**
 * `buildReport` / `moka report` end to end on real runs of a tiny model: a base row (evaluation only), a MoKA
 * and a LoRA run (a few training steps with `runTraining`, then `evaluate` with the adapter unmerged). Checks
 * the numbers in report.json against the evaluation files, the Markdown table, and the HTML page in headless
 * Chromium (table rows, chart marks, no console errors; a screenshot lands in test-artifacts/).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import { buildReport, evaluate } from '../../lib/eval/index.ts';
import { paretoFront, type ReportData } from '../../lib/eval/report-model.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';
import { runTraining } from '../../lib/train/run-training.ts';
import { isUserError } from '../../lib/errors.ts';
import { runMoka } from '../helpers/run-moka.ts';

const DATA = fileURLToPath(new URL('./fixtures/data', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts', import.meta.url));
let root: string;
const model = () => join(root, 'model');
const runDir = (name: string) => join(root, 'runs', name);

async function trainRun(name: string, adapter: Record<string, unknown>, steps: number) {
  await runTraining({
    modelDir: model(),
    train: [join(root, 'train.jsonl')],
    outputDir: runDir(name),
    training: parseTrainConfig({
      seed: 1,
      maxSteps: steps,
      microBatchSize: 4,
      maxLength: 32,
      evalRecords: 4,
      evalEvery: 2,
      checkpointEvery: 100,
      learningRate: 1e-2,
    }),
    adapter: parseAdapterConfig(adapter),
    intraOpThreads: 1,
    progress: 'none',
    handleSignals: false,
    warn: () => {},
  });
}

const evalRun = (name: string, adapter: boolean) =>
  evaluate({
    modelDir: model(),
    ...(adapter ? { adapterDir: join(runDir(name), 'adapter') } : {}),
    tasks: ['boolq', 'arc_easy', join(root, 'facts.json')],
    dataDir: DATA,
    outDir: join(runDir(name), 'evals'),
    progress: 'none',
    intraOpThreads: 1,
  });

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'moka-report-'));
  await writeTinyCheckpoint({ dir: model(), seed: 5 });
  const words = ['red', 'green', 'blue', 'cat', 'dog', 'sun', 'moon', 'tree'];
  writeFileSync(
    join(root, 'train.jsonl'),
    Array.from({ length: 24 }, (_, i) =>
      JSON.stringify({ text: `The ${words[i % 8]} ${words[(i * 3) % 8]} is ${words[(i * 5) % 8]}.` }),
    ).join('\n'),
  );
  writeFileSync(
    join(root, 'facts.json'),
    JSON.stringify([
      { context: 'The sky is', choices: ['blue', 'green'], answer: 0 },
      { context: 'Grass is', choices: ['blue', 'green'], answer: 'green' },
      { context: 'A cat says', choices: ['meow', 'moo', 'quack'], answer: 0 },
    ]),
  );
  mkdirSync(runDir('base'), { recursive: true });
  await evalRun('base', false);
  await trainRun(
    'moka',
    { type: 'moka', plan: { count: 3 }, gateInit: 'normal', targetModules: ['q_proj', 'v_proj'] },
    4,
  );
  await evalRun('moka', true);
  await trainRun('lora', { type: 'lora', r: 2, targetModules: ['q_proj', 'v_proj'] }, 2);
  await evalRun('lora', true);
}, 60_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('buildReport', () => {
  it('report.json holds each run’s metrics from its evals, the deltas to the base row and the Pareto front', async () => {
    const out = join(root, 'report');
    const summary = await buildReport({ runDirs: ['base', 'moka', 'lora'].map(runDir), outDir: out });
    const data = JSON.parse(readFileSync(summary.reportJson, 'utf8')) as ReportData;
    expect(data.base).toBe('base');
    expect(data.tasks.map((t) => `${t.task}:${t.metric}`)).toEqual([
      'boolq:acc',
      'arc_easy:acc',
      'facts:acc',
    ]);
    for (const r of data.runs) {
      for (const t of data.tasks) {
        const evalFile = JSON.parse(readFileSync(join(runDir(r.name), 'evals', `${t.task}.json`), 'utf8'));
        expect(r.scores[t.task]).toEqual(evalFile.metrics.acc);
        const base = JSON.parse(readFileSync(join(runDir('base'), 'evals', `${t.task}.json`), 'utf8'));
        if (r.adapterType)
          expect(r.deltaToBase[t.task]).toBeCloseTo(
            100 * (evalFile.metrics.acc.value - base.metrics.acc.value),
            9,
          );
      }
    }
    const byName = Object.fromEntries(data.runs.map((r) => [r.name, r]));
    expect(byName.moka!.adapterType).toBe('moka');
    expect(byName.lora!.adapterType).toBe('lora');
    const summaryOf = (n: string) => JSON.parse(readFileSync(join(runDir(n), 'train-summary.json'), 'utf8'));
    expect(byName.moka!.trainableParameters).toBe(summaryOf('moka').trainableParameters);
    expect(byName.base!.trainableParameters).toBe(0);
    // The Pareto flags are those of the (params, average) points of the adapter runs.
    const adapters = data.runs.filter((r) => r.adapterType);
    const front = paretoFront(adapters.map((r) => ({ params: r.trainableParameters, accuracy: r.average! })));
    adapters.forEach((r, i) => expect(r.pareto).toBe(front.has(i)));
    // Loss curves: train every step and held-out every 2 steps (+ step 0), per trained run.
    expect(data.losses.filter((l) => l.run === 'moka' && l.split === 'train')).toHaveLength(4);
    expect(
      data.losses.filter((l) => l.run === 'moka' && l.split === 'held-out').length,
    ).toBeGreaterThanOrEqual(2);
    // Gates: softmax weights per (layer, projection), summing to 1.
    const gates = data.gates.filter((g) => g.run === 'moka');
    expect(gates).toHaveLength(2 * 2 * 3); // layers × projections × components
    const sums = new Map<string, number>();
    for (const g of gates)
      sums.set(`${g.layer}.${g.projection}`, (sums.get(`${g.layer}.${g.projection}`) ?? 0) + g.weight);
    for (const s of sums.values()) expect(s).toBeCloseTo(1, 6);
    // The terminal table and report.md have one row per run.
    expect(summary.table.split('\n')).toHaveLength(2 + 3);
    const md = readFileSync(summary.reportMd, 'utf8');
    expect(md).toContain(
      '| run | adapter | trainable | boolq (acc) | arc_easy (acc) | facts (acc) | average |',
    );
    for (const n of ['base', 'moka', 'lora']) expect(md).toMatch(new RegExp(`^\\| ${n}( \\*)? \\| `, 'm'));
  });

  it('report.html opens in headless Chromium with the table rows, the chart marks and no errors', async () => {
    const out = join(root, 'report-html');
    const { reportHtml } = await buildReport({
      runDirs: ['base', 'moka', 'lora'].map(runDir),
      names: ['4-bit base', 'MoKA', 'LoRA'],
      outDir: out,
    });
    const html = readFileSync(reportHtml, 'utf8');
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/); // self-contained: no scripts, no fetches
    const browser = await chromium.launch({
      // Debian's chromium (installed by .ci/run); MOKA_CHROMIUM points elsewhere (e.g. a local Chrome).
      executablePath: process.env.MOKA_CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(`file://${reportHtml}`);
      expect(await page.locator('#accuracy-table tbody tr').count()).toBe(3);
      expect(await page.locator('#accuracy-table tbody tr td:first-child').allTextContents()).toEqual([
        '4-bit base',
        'MoKA',
        'LoRA',
      ]);
      // One point per adapter run (the base is the dashed rule), one line per (run, split), one cell per gate.
      expect(await page.locator('#chart-accuracy g.runs_marks path').count()).toBe(2);
      expect(await page.locator('#chart-loss g.mark-line.role-mark path').count()).toBe(4);
      expect(await page.locator('#chart-gates g.mark-rect.role-mark path').count()).toBe(12);
      // The Pareto front is a line through the front's runs.
      expect(await page.locator('#chart-accuracy g.pareto_front_marks path').count()).toBe(1);
      expect(errors).toEqual([]);
      expect(requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:'))).toEqual([]);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'report.png'), fullPage: true });
    } finally {
      await browser.close();
    }
  }, 30_000);

  it('a run directory without evals/ fails with one line naming the fix, and writes nothing', async () => {
    const out = join(root, 'report-bad');
    mkdirSync(join(root, 'runs', 'empty'), { recursive: true });
    const err = await buildReport({ runDirs: [runDir('base'), runDir('empty')], outDir: out }).catch(
      (e) => e,
    );
    expect(isUserError(err)).toBe(true);
    expect(err.message).toMatch(/has no evals\/ folder; run `moka eval --out .*evals`/);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  });

  it('an evaluation result of a version this moka does not know is refused', async () => {
    const future = join(root, 'runs', 'future');
    cpSync(join(runDir('base'), 'evals'), join(future, 'evals'), { recursive: true });
    const file = join(future, 'evals', readdirSync(join(future, 'evals')).find((f) => f.endsWith('.json'))!);
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), version: 2 }));
    await expect(buildReport({ runDirs: [future], outDir: join(root, 'report-future') })).rejects.toThrow(
      /is a moka evaluation result of version 2; this moka reads version 1/,
    );
  });

  it('names must match the run directories one to one and be distinct', async () => {
    const out = join(root, 'report-names');
    await expect(buildReport({ runDirs: [runDir('base')], names: ['a', 'b'], outDir: out })).rejects.toThrow(
      /2 names for 1 run directories; give one name per run/,
    );
    await expect(
      buildReport({ runDirs: [runDir('base'), runDir('lora')], names: ['x', 'x'], outDir: out }),
    ).rejects.toThrow(/two runs are named "x"; give distinct names/);
    expect(existsSync(out)).toBe(false);
  });

  it('moka report prints the table and writes the three files', () => {
    const out = join(root, 'report-cli');
    const r = runMoka(['report', runDir('base'), runDir('lora'), '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^run\s+adapter\s+trainable/);
    expect(readdirSync(out).sort()).toEqual(['report.html', 'report.json', 'report.md']);
    const bad = runMoka(['report', join(root, 'nope'), '--out', join(root, 'report-cli2')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/run directory .*nope does not exist/);
  });
});
