/** Registers every subcommand on the program. Later issues add one import and one call each. */
import type { Command } from 'commander';
import { registerDoctor } from './doctor.ts';
import { registerPlan } from './plan.ts';
import { registerInitTiny } from './init-tiny.ts';
import { registerQuantize } from './quantize.ts';
import { registerDequantize } from './dequantize.ts';
import { registerGenerate } from './generate.ts';
import { registerScore } from './score.ts';
import { registerMerge } from './merge.ts';
import { registerExportOnnx } from './export-onnx.ts';
import { registerTrain } from './train.ts';
import { registerTokenize } from './tokenize.ts';
import { registerEval } from './eval.ts';
import { registerReport } from './report.ts';
import { registerDemo } from './demo.ts';
import { registerRun } from './run.ts';
import { registerStage } from './stage.ts';
import { registerSchema } from './schema.ts';
import { registerStart } from './start.ts';
import { registerStatus } from './status.ts';
import { registerLogs } from './logs.ts';
import { registerFetch } from './fetch.ts';
import { registerContainerStartLog } from './container-start-log.ts';

export function registerCommands(program: Command): void {
  registerDoctor(program);
  registerPlan(program);
  registerInitTiny(program);
  registerQuantize(program);
  registerDequantize(program);
  registerGenerate(program);
  registerScore(program);
  registerMerge(program);
  registerExportOnnx(program);
  registerTrain(program);
  registerTokenize(program);
  registerEval(program);
  registerReport(program);
  registerDemo(program);
  registerRun(program);
  registerStage(program);
  registerSchema(program);
  registerStart(program);
  registerStatus(program);
  registerLogs(program);
  registerFetch(program);
  registerContainerStartLog(program);
}
