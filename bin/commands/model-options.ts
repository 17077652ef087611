/**
 * Options shared by the commands that run a model (`generate`, `score`): which checkpoint, on which execution
 * provider. Loading goes through `loadCommandModel`, the one place a command turns its flags into
 * `LoadModelOptions`: the adapters issue adds `--adapter DIR` in `addModelOptions` and turns it into projection
 * hooks (and feeds) there, so every model command gets it at once.
 */
import type { Command } from 'commander';
import type { ProviderChoice } from '../../lib/engine/index.ts';
import { UserError } from '../../lib/errors.ts';
import { LlamaModel, type LoadModelOptions } from '../../lib/model/llama-model.ts';

export interface ModelCommandOptions {
  model: string;
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
  const load: LoadModelOptions = {
    provider: opts.provider as ProviderChoice,
    intraOpThreads: opts.threads === undefined ? undefined : parseInteger(opts.threads, '--threads', 1),
  };
  return LlamaModel.load(opts.model, load);
}
