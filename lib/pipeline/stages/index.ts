/** The four stages by name (what `moka stage <name>` and the local runner dispatch to). */
import type { StageName } from '../state-names.ts';
import { evalStage } from './eval-stage.ts';
import { quantizeStage } from './quantize-stage.ts';
import { reportStage } from './report-stage.ts';
import type { StageOutcome } from './stage-context.ts';
import { trainStage, type TrainStageOptions } from './train-stage.ts';

export const STAGES: Record<StageName, (opts: TrainStageOptions) => Promise<StageOutcome>> = {
  quantize: quantizeStage,
  train: trainStage,
  eval: evalStage,
  report: reportStage,
};

export { StageContext, type StageOptions, type StageOutcome } from './stage-context.ts';
export { StageInterruptedError, storedCheckpointSteps, type TrainStageOptions } from './train-stage.ts';
export { evalStage, quantizeStage, reportStage, trainStage };
