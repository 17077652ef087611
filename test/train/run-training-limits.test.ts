/**
 * runTraining against the limits of the model rather than of the data: a tokenizer with a `<pad>` token added past
 * the model's embedding rows, and a max_position_embeddings that is not a multiple of padToMultipleOf.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import { UserError } from '../../lib/errors.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { runTraining } from '../../lib/train/run-training.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-train-limits-'));
const model = join(root, 'tiny');
const data = join(root, 'data.jsonl');
const withPad = join(root, 'with-pad.jsonl');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const WORDS = 'the quick brown fox jumps over the lazy dog while a tiny model learns each word'.split(' ');

beforeAll(async () => {
  // 512 embedding rows and 40 positions; the tokenizer gets a `<pad>` at id 512, as many fine-tuning scripts add.
  await writeTinyCheckpoint({ dir: model, seed: 4, maxPositionEmbeddings: 40 });
  const tokJson = JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8'));
  tokJson.added_tokens.push({
    id: 512,
    content: '<pad>',
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(tokJson));
  const tokConfig = JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify({ ...tokConfig, pad_token: '<pad>' }));
  // Texts of 4 to 60 words: short ones leave padding in every batch, long ones are cut at maxLength 40.
  const records = Array.from({ length: 24 }, (_, i) => ({
    text: Array.from({ length: 4 + ((i * 7) % 57) }, (_, j) => WORDS[(i + j) % WORDS.length]).join(' '),
  }));
  writeFileSync(data, records.map((r) => JSON.stringify(r)).join('\n'));
  writeFileSync(
    withPad,
    [...records.slice(0, 5), { text: 'a record with <pad> in it' }].map((r) => JSON.stringify(r)).join('\n'),
  );
});

const run = (train: string, out: string) =>
  runTraining({
    modelDir: model,
    train: [train],
    outputDir: join(root, out),
    training: parseTrainConfig({
      seed: 1,
      maxSteps: 2,
      microBatchSize: 4,
      maxLength: 40,
      padToMultipleOf: 16,
      evalRecords: 4,
      evalEvery: 2,
      checkpointEvery: 100,
    }),
    adapter: parseAdapterConfig({ type: 'lora', r: 2 }),
    intraOpThreads: 1,
    progress: 'none',
    handleSignals: false,
    warn: () => {},
  });

describe('training within the limits of the model', () => {
  it('pads with EOS when the pad token is past the embedding, and pads no further than max_position_embeddings', async () => {
    // maxLength 40 = max_position_embeddings: batches round up to 40, not to 48 (the next multiple of 16).
    const r = await run(data, 'run');
    expect(r.stoppedBy).toBe('completed');
    expect(r.step).toBe(2);
    expect(Number.isFinite(r.lastEvalLoss)).toBe(true);
    expect(r.data.truncated).toBeGreaterThan(0);
  });

  it('refuses data that tokenizes to an id the model has no row for, naming the record', async () => {
    const err = await run(withPad, 'run-pad').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(
      /with-pad\.jsonl:6: token id 512 \("<pad>"\) is outside the model's vocabulary \(vocab_size 512\)/,
    );
  });
});
