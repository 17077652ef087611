/** `moka init-tiny`: write a small random LLaMA checkpoint (HF layout, real tokenizer) for tests and trials. */
import type { Command } from 'commander';
import { UserError } from '../../lib/errors.ts';
import { parseFloatDtype, torchDtypeName } from '../../lib/model/dtype-convert.ts';
import { writeTinyCheckpoint, type TinyDtype } from '../../lib/model/tiny-checkpoint.ts';

interface InitTinyOptions {
  out: string;
  seed: string;
  dtype: string;
  shards: string;
  tied?: boolean;
  layers: string;
  hidden: string;
  intermediate: string;
  heads: string;
  kvHeads: string;
  headDim?: string;
  vocab?: string;
  ropeTheta: string;
  ropeScalingFactor?: string;
  maxPositions: string;
  force?: boolean;
  json?: boolean;
}

function int(value: string, flag: string, min = 1): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UserError(`${flag} must be an integer >= ${min}, got "${value}"`);
  }
  return n;
}

function positiveNumber(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UserError(`${flag} must be a positive number, got "${value}"`);
  return n;
}

export function registerInitTiny(program: Command): void {
  program
    .command('init-tiny')
    .description(
      'write a tiny random LLaMA checkpoint (Hugging Face layout, byte-level BPE tokenizer) for tests',
    )
    .requiredOption('--out <dir>', 'directory to create (must be new or empty unless --force)')
    .option('--seed <n>', 'random seed; the same seed gives the same weights', '0')
    .option('--dtype <dtype>', 'weight dtype: f32, f16 or bf16', 'f32')
    .option('--shards <n>', 'number of safetensors shards (an index is written when > 1)', '1')
    .option('--tied', 'tie the output head to the embedding (no lm_head tensor)')
    .option('--layers <n>', 'decoder layers', '2')
    .option('--hidden <n>', 'hidden size', '64')
    .option('--intermediate <n>', 'MLP intermediate size', '128')
    .option('--heads <n>', 'attention heads', '4')
    .option('--kv-heads <n>', 'key/value heads (fewer than --heads means grouped-query attention)', '2')
    .option('--head-dim <n>', 'head dimension (default hidden / heads)')
    .option('--vocab <n>', 'vocabulary rows (default: the tokenizer size, 512; larger pads the embedding)')
    .option('--rope-theta <x>', 'RoPE base', '10000')
    .option('--rope-scaling-factor <x>', 'enable Llama 3.1 RoPE scaling with this factor')
    .option('--max-positions <n>', 'max_position_embeddings', '2048')
    .option('--force', 'write into a non-empty directory, replacing its checkpoint files')
    .option('--json', 'print a JSON summary')
    .action(async (opts: InitTinyOptions) => {
      const dtype = parseFloatDtype(opts.dtype);
      if (dtype === null || dtype === 'F64') {
        throw new UserError(`--dtype must be f32, f16 or bf16, got "${opts.dtype}"`);
      }
      const result = await writeTinyCheckpoint({
        dir: opts.out,
        seed: int(opts.seed, '--seed', 0),
        dtype: torchDtypeName(dtype) as TinyDtype,
        shards: int(opts.shards, '--shards'),
        tieWordEmbeddings: opts.tied ?? false,
        numLayers: int(opts.layers, '--layers'),
        hiddenSize: int(opts.hidden, '--hidden'),
        intermediateSize: int(opts.intermediate, '--intermediate'),
        numHeads: int(opts.heads, '--heads'),
        numKvHeads: int(opts.kvHeads, '--kv-heads'),
        headDim: opts.headDim === undefined ? undefined : int(opts.headDim, '--head-dim'),
        vocabSize: opts.vocab === undefined ? undefined : int(opts.vocab, '--vocab'),
        ropeTheta: positiveNumber(opts.ropeTheta, '--rope-theta'),
        ropeScaling:
          opts.ropeScalingFactor === undefined
            ? null
            : { factor: positiveNumber(opts.ropeScalingFactor, '--rope-scaling-factor') },
        maxPositionEmbeddings: int(opts.maxPositions, '--max-positions'),
        force: opts.force ?? false,
      });
      const c = result.config;
      const summary = {
        dir: result.dir,
        files: result.files,
        parameters: result.numParameters,
        dtype: c.torchDtype,
        layers: c.numLayers,
        hiddenSize: c.hiddenSize,
        heads: c.numHeads,
        kvHeads: c.numKvHeads,
        vocabSize: c.vocabSize,
        tiedEmbeddings: c.tieWordEmbeddings,
      };
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `wrote ${result.dir}: ${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads}/${c.numKvHeads} heads, ` +
          `vocab ${c.vocabSize}, ${result.numParameters} parameters (${c.torchDtype})\n`,
      );
      for (const f of result.files) process.stdout.write(`  ${f}\n`);
    });
}
