/**
 * `npm run bench [-- --only NAME[,NAME]]`: runs the benchmark suites, prints a table and writes
 * bench/results.json. With --only, the other suites' previous entries are kept. The real-scale suite (`scale`)
 * runs only when named: `npm run bench -- --only scale`.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, platform, arch } from 'node:os';
import * as ort from 'onnxruntime-node';
import { engineSuite } from './engine.bench.ts';
import { adaptersSuite } from './adapters.bench.ts';
import { modelSuite } from './model.bench.ts';
import { trainSuite } from './train.bench.ts';
import { quantSuite } from './quant.bench.ts';
import { matmul4bitSuite } from './matmul-4bit.bench.ts';
import { storeSuite } from './store.bench.ts';
import { evalSuite } from './eval.bench.ts';
import { scaleSuite } from './scale.bench.ts';
import type { BenchEntry, Suite } from './harness.ts';

const SUITES: Suite[] = [
  engineSuite,
  adaptersSuite,
  modelSuite,
  quantSuite,
  matmul4bitSuite,
  trainSuite,
  evalSuite,
  storeSuite,
  scaleSuite,
];
const RESULTS = new URL('./results.json', import.meta.url);

async function main() {
  const onlyArg = process.argv.indexOf('--only');
  const only = onlyArg >= 0 ? new Set(process.argv[onlyArg + 1]?.split(',')) : null;
  const unknown = only ? [...only].filter((n) => !SUITES.some((s) => s.name === n)) : [];
  if (unknown.length) {
    process.stderr.write(
      `bench: unknown suite(s) ${unknown.join(', ')}; known: ${SUITES.map((s) => s.name).join(', ')}\n`,
    );
    process.exit(2);
  }
  const previous: { benchmarks: (BenchEntry & { suite?: string })[] } = existsSync(RESULTS)
    ? JSON.parse(readFileSync(RESULTS, 'utf8'))
    : { benchmarks: [] };
  const entries: (BenchEntry & { suite: string })[] = [];
  for (const suite of SUITES) {
    if (only ? !only.has(suite.name) : suite.onlyWhenAsked) {
      entries.push(
        ...previous.benchmarks
          .filter((b) => b.suite === suite.name)
          .map((b) => ({ ...b, suite: suite.name })),
      );
      continue;
    }
    process.stderr.write(`bench: running ${suite.name} …\n`);
    const fresh = await suite.run();
    if (suite.mergePrevious) {
      const names = new Set(fresh.map((e) => e.name));
      entries.push(
        ...previous.benchmarks
          .filter((b) => b.suite === suite.name && !names.has(b.name))
          .map((b) => ({ ...b, suite: suite.name })),
      );
    }
    for (const e of fresh) {
      entries.push({ suite: suite.name, ...e });
      const cmp = e.ratio !== undefined ? `  ratio ${e.ratio} vs ${e.baselineValue} ${e.unit}` : '';
      process.stdout.write(`${e.name.padEnd(48)} ${String(e.value).padStart(10)} ${e.unit}${cmp}\n`);
    }
  }
  const results = {
    machine: {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: cpus().length,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      platform: `${platform()}-${arch()}`,
      node: process.version,
      onnxruntime: ort.env.versions.common,
      date: new Date().toISOString(),
    },
    benchmarks: entries,
  };
  const tmp = `${RESULTS.pathname}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(results, null, 2)}\n`);
  renameSync(tmp, RESULTS);
  process.stderr.write(`bench: wrote bench/results.json (${entries.length} entries)\n`);
}

await main();
