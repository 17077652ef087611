/**
 * `moka demo`: the whole local pipeline on a generated tiny model, start to finish in a few minutes on a laptop:
 * a tiny RANDOM LLaMA checkpoint, a synthetic multiple-choice task (a code 1-4 for each of 24 things) and its training data,
 * then `moka run` with MoKA and a LoRA baseline of about the same size: quantize (NF4), train both, evaluate them
 * and the base, and report. Ends with the accuracy table and the path of report.html.
 */
import type { Command } from 'commander';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UserError } from '../../lib/errors.ts';
import { prepareDemo } from '../../lib/pipeline/demo.ts';
import { localPathOfUri, openStore, readJson } from '../../lib/pipeline/store/index.ts';
import { runKeys } from '../../lib/pipeline/run-layout.ts';
import type { StageRecord } from '../../lib/pipeline/status.ts';
import { parseInteger, parseProgressMode } from './cli-helpers.ts';
import { describeFailure, runPipelineFromFile } from './run.ts';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'run the whole pipeline on a generated tiny model: MoKA vs LoRA on a synthetic task, with a report',
    )
    .option('--dir <dir>', 'where the demo model, data, config and runs go', 'moka-demo')
    .option('--steps <n>', 'training steps per adapter', '200')
    .option('--progress <mode>', 'auto (bar on a terminal, JSON lines otherwise), bar, json or none', 'none')
    .action(async (opts: { dir: string; steps: string; progress: string }) => {
      const steps = parseInteger(opts.steps, '--steps', 1);
      const progress = parseProgressMode(opts.progress);
      const dir = resolve(opts.dir);
      await mkdir(dir, { recursive: true });
      const say = (line: string) => process.stdout.write(`${line}\n`);
      say(
        'moka demo: the model is a TINY RANDOM LLaMA generated on the spot (2 layers, hidden 64), not a real one;',
      );
      say(
        'the task is synthetic (a code 1-4 for each of 24 things), so the un-adapted model scores about chance (25%).',
      );
      const inputs = await prepareDemo({ dir, steps });
      say(`  model  ${inputs.modelDir}`);
      say(`  data   ${inputs.trainFile}`);
      say(`  task   ${inputs.taskFile}`);
      say(
        `  config ${inputs.configFile} (MoKA ${inputs.params.moka} vs LoRA ${inputs.params.lora} trainable parameters)`,
      );
      const started = Date.now();
      const runId = `demo-${new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`;
      const result = await runPipelineFromFile({
        configFile: inputs.configFile,
        store: join(dir),
        runId,
        progress,
        log: (line) => process.stderr.write(`${line}\n`),
      });
      if (result.status === 'FAILED')
        throw new UserError(describeFailure(result, inputs.configFile, result.runId));
      const out = result.output!;
      const report = await readJson<StageRecord>(openStore(dir), runKeys(runId).stageRecord('report'));
      say('');
      say(String(report?.result?.table ?? ''));
      say('');
      say(
        `finished in ${((Date.now() - started) / 1000).toFixed(0)} s; run folder ${localPathOfUri(out.runUri!)}`,
      );
      if (out.reportUri) say(`report: ${localPathOfUri(out.reportUri)}`);
      say('');
      say(
        'With a real model (a Hugging Face folder) and your data, write a run config like examples/compare-adapters.json',
      );
      say('and run:  moka run examples/compare-adapters.json   (see docs/pipeline.md)');
    });
}
