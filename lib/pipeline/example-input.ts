/**
 * The example execution input the deployed stack prints (its `ExampleInput` output) and docs/deploy.md shows:
 * a run config comparing MoKA with LoRA on a model and data set stored in the artifact bucket, on the GPU
 * (`compute.provider: "auto"` picks CUDA in the task image). The test suite parses it with the run-config schema.
 */
import type { RunConfigInput } from './run-config.ts';

export function exampleRunInput(bucket: string): RunConfigInput {
  return {
    model: `s3://${bucket}/models/Llama-3.2-1B-Instruct`,
    quantize: { format: 'nf4', blockSize: 64, doubleQuant: true },
    adapters: [
      { name: 'moka', type: 'moka', targetModules: 'all-linear' },
      { name: 'lora', type: 'lora', r: 8, targetModules: 'all-linear' },
    ],
    data: { train: `s3://${bucket}/datasets/alpaca-sample/train.jsonl`, format: 'alpaca' },
    training: { maxSteps: 200, microBatchSize: 4, learningRate: 0.0002, checkpointEvery: 50 },
    evals: { tasks: ['arc_easy'], limit: 200 },
    compute: { provider: 'auto' },
  };
}
