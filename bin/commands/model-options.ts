/**
 * Options shared by the commands that run a model (`generate`, `score`): which checkpoint, on which execution
 * provider. Loading goes through `loadCommandModel`, the one place a command turns its flags into
 * a runnable model: a float or 4-bit checkpoint, with `--adapter DIR` applied through the projection hooks.
 */
import type { Command } from 'commander';
import type { ProviderChoice } from '../../lib/engine/index.ts';
import { UserError } from '../../lib/errors.ts';
import { loadAdaptedModel } from '../../lib/adapters/adapted-model.ts';
import type { LlamaModel } from '../../lib/model/llama-model.ts';

export interface ModelCommandOptions {
  model: string;
  adapter?: string;
  provider: string;
  threads?: string;
}

const PROVIDERS: readonly ProviderChoice[] = ['cpu', 'cuda', 'webgpu', 'auto'];

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

export function parseInteger(value: string, flag: string, min: number): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UserError(`${flag} must be an integer >= ${min}, got "${value}"`);
  }
  return n;
}

export function parseNumber(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n))
    throw new UserError(`${flag} must be a number, got "${value}"`);
  return n;
}

export async function loadCommandModel(opts: ModelCommandOptions): Promise<LlamaModel> {
  if (!PROVIDERS.includes(opts.provider as ProviderChoice)) {
    throw new UserError(`--provider must be one of ${PROVIDERS.join(', ')}, got "${opts.provider}"`);
  }
  // A 4-bit model directory loads with its projections kept 4-bit; --adapter adds the update unmerged.
  return loadAdaptedModel(opts.model, {
    adapter: opts.adapter,
    provider: opts.provider as ProviderChoice,
    intraOpThreads: opts.threads === undefined ? undefined : parseInteger(opts.threads, '--threads', 1),
  });
}
