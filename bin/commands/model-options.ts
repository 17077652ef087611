/**
 * Options shared by the commands that run a model (`generate`, `score`): which checkpoint, on which execution
 * provider. Loading goes through `loadCommandModel`, the one place a command turns its flags into
 * a runnable model: a float or 4-bit checkpoint, with `--adapter DIR` applied through the projection hooks.
 */
import type { Command } from 'commander';
import { loadAdaptedModel } from '../../lib/adapters/adapted-model.ts';
import type { LlamaModel } from '../../lib/model/llama-model.ts';
import { parseInteger, parseProvider } from './cli-helpers.ts';

export interface ModelCommandOptions {
  model: string;
  adapter?: string;
  provider: string;
  threads?: string;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption(
      '--model <dir>',
      'Hugging Face model directory (config.json, safetensors, tokenizer.json)',
    )
    .option(
      '--adapter <dir>',
      'apply a trained adapter (adapter_config.json + adapter_model.safetensors), unmerged',
    )
    .option('--provider <name>', 'execution provider: cpu, cuda, webgpu or auto', 'cpu')
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: the physical cores)');
}

export async function loadCommandModel(opts: ModelCommandOptions): Promise<LlamaModel> {
  const provider = parseProvider(opts.provider);
  // A 4-bit model directory loads with its projections kept 4-bit; --adapter adds the update unmerged.
  return loadAdaptedModel(opts.model, {
    adapter: opts.adapter,
    provider,
    intraOpThreads: opts.threads === undefined ? undefined : parseInteger(opts.threads, '--threads', 1),
  });
}
