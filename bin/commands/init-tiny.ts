/** `moka init-tiny`: write a small random LLaMA checkpoint (HF layout, real tokenizer) for tests and trials. */
import type { Command } from 'commander';
import { torchDtypeName } from '../../lib/model/dtype-convert.ts';
import { writeTinyCheckpoint, type TinyDtype } from '../../lib/model/tiny-checkpoint.ts';
import { parseInteger, parsePositiveNumber, parseStorageDtype } from './cli-helpers.ts';

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
      const dtype = parseStorageDtype(opts.dtype);
      const result = await writeTinyCheckpoint({
        dir: opts.out,
        seed: parseInteger(opts.seed, '--seed', 0),
        dtype: torchDtypeName(dtype) as TinyDtype,
        shards: parseInteger(opts.shards, '--shards', 1),
        tieWordEmbeddings: opts.tied ?? false,
        numLayers: parseInteger(opts.layers, '--layers', 1),
        hiddenSize: parseInteger(opts.hidden, '--hidden', 1),
        intermediateSize: parseInteger(opts.intermediate, '--intermediate', 1),
        numHeads: parseInteger(opts.heads, '--heads', 1),
        numKvHeads: parseInteger(opts.kvHeads, '--kv-heads', 1),
        headDim: opts.headDim === undefined ? undefined : parseInteger(opts.headDim, '--head-dim', 1),
        vocabSize: opts.vocab === undefined ? undefined : parseInteger(opts.vocab, '--vocab', 1),
        ropeTheta: parsePositiveNumber(opts.ropeTheta, '--rope-theta'),
        ropeScaling:
          opts.ropeScalingFactor === undefined
            ? null
            : { factor: parsePositiveNumber(opts.ropeScalingFactor, '--rope-scaling-factor') },
        maxPositionEmbeddings: parseInteger(opts.maxPositions, '--max-positions', 1),
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
