/**
 * The state names of the pipeline's state machine. The CDK construct (lib/infra/pipeline-state-machine.ts) names
 * its states with these, and the local runner binds each Task state to its stage or handler by name, so they are
 * part of the contract between the two: change them in one place only. Names are also what the Step Functions
 * console and `moka run` show.
 */
export const STATE_NAMES = {
  /** Lambda: validate the run config, write config.json and status.json, return the run's plan. */
  validate: 'ValidateRun',
  /** Choice: skip Quantize when the quantized model is already cached (or quantization is off). */
  quantizeChoice: 'QuantizeNeeded',
  /** Batch: `moka stage quantize --run <runUri>`. */
  quantize: 'Quantize',
  /** Parallel: the variants' Map beside the base model's evaluation. */
  variants: 'TrainAndEvaluate',
  /** Map over the variant names (concurrency configurable). */
  variantMap: 'Variants',
  /** Batch, inside the Map: `moka stage train --run <runUri> --variant <name>`. */
  train: 'Train',
  /** Choice inside the Map: evaluate only when the run config has evals. */
  evaluateChoice: 'EvaluateVariantNeeded',
  /** Batch, inside the Map: `moka stage eval --run <runUri> --variant <name>`. */
  evaluate: 'Evaluate',
  evaluateSkipped: 'VariantDone',
  /** Choice in the base branch. */
  evaluateBaseChoice: 'EvaluateBaseNeeded',
  /** Batch: `moka stage eval --run <runUri> --variant base` (the un-adapted model: the report's reference row). */
  evaluateBase: 'EvaluateBase',
  evaluateBaseSkipped: 'BaseDone',
  /** Batch: `moka stage report --run <runUri>`. */
  report: 'Report',
  /** Lambda: record success in status.json, return the execution's output summary. */
  finalize: 'Finalize',
  /** Lambda: record the failure (the caught error) in status.json. */
  recordFailure: 'RecordFailure',
  failed: 'RunFailed',
  succeeded: 'RunSucceeded',
} as const;

/** The stages a Batch job runs (`moka stage <name>`). */
export const STAGE_NAMES = ['quantize', 'train', 'eval', 'report'] as const;
export type StageName = (typeof STAGE_NAMES)[number];

/** Which stage each Batch Task state runs. */
export const BATCH_STATE_STAGES: Record<string, StageName> = {
  [STATE_NAMES.quantize]: 'quantize',
  [STATE_NAMES.train]: 'train',
  [STATE_NAMES.evaluate]: 'eval',
  [STATE_NAMES.evaluateBase]: 'eval',
  [STATE_NAMES.report]: 'report',
};

/** Exit code of `moka stage` for a deterministic failure (bad config or data): the Batch retry strategy EXITs on it. */
export const DETERMINISTIC_FAILURE_EXIT_CODE = 42;
