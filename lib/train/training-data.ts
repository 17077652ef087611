/**
 * The whole data side of a run: read the train (and optional eval) files, apply the bad-record policy, split a
 * seeded held-out set when no eval file is given, tokenize, apply the length policy, and report what happened.
 * The split is made on records, before tokenization, so it does not change when maxLength does.
 */
import { UserError } from '../errors.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import {
  checkBadRecords,
  formatBadRecords,
  readDatasetRecords,
  splitHeldOut,
  type BadRecord,
  type DatasetRecord,
  type RecordSource,
} from './datasets.ts';
import { tokenizeRecord, sampleTargetCount, type TokenizedSample } from './tokenize-batch.ts';
import type { DatasetFormat, TrainConfig } from './train-config.ts';

export interface DataReport {
  trainFiles: string[];
  evalFiles: string[];
  /** Usable records per format (train and eval files together). */
  formats: Partial<Record<DatasetFormat, number>>;
  badRecords: number;
  /** The first bad records, with file and line. */
  badExamples: BadRecord[];
  /** Samples cut at maxLength (truncation 'truncate'). */
  truncated: number;
  /** Samples left out as longer than maxLength (truncation 'drop'). */
  droppedTooLong: number;
  /** Samples left out because no response token survived truncation. */
  droppedNoTargets: number;
  trainSamples: number;
  evalSamples: number;
  /** Counted (loss) tokens in one pass over the training split. */
  trainTargetTokens: number;
  longestSample: number;
}

export interface TrainingData {
  train: TokenizedSample[];
  eval: TokenizedSample[];
  report: DataReport;
}

export interface PrepareOptions {
  train: string | readonly string[];
  /** Separate held-out files; when absent, evalFraction/evalRecords of the training records are held out. */
  eval?: string | readonly string[];
  tokenizer: Tokenizer;
  config: TrainConfig;
  /**
   * The model's vocab_size: a token id at or past it (a token the tokenizer added that the model has no embedding
   * row for) is a UserError naming the record. Absent: not checked.
   */
  vocabSize?: number;
  warn?: (message: string) => void;
  /** Shorten file names in reports relative to this directory. */
  displayRoot?: string;
  /** The wall clock chat templates' `strftime_now` sees, pinned for the run ("YYYY-MM-DDTHH:MM:SS"). */
  chatClock?: string;
}

const MAX_LISTED = 5;

function listSources(list: readonly (RecordSource & { length: number })[]): string {
  const shown = list.slice(0, MAX_LISTED).map((s) => `${s.file}:${s.line} (${s.length} tokens)`);
  return shown.join(', ') + (list.length > MAX_LISTED ? `, … ${list.length - MAX_LISTED} more` : '');
}

export async function prepareTrainingData(opts: PrepareOptions): Promise<TrainingData> {
  const { config, tokenizer } = opts;
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const trainLoaded = await readDatasetRecords(opts.train, {
    format: config.datasetFormat,
    displayRoot: opts.displayRoot,
  });
  checkBadRecords(trainLoaded, config.maxBadRecordFraction, 'training dataset', warn);
  let trainRecords: DatasetRecord[];
  let evalRecords: DatasetRecord[];
  let evalFiles: string[] = [];
  let bad = [...trainLoaded.bad];
  if (opts.eval !== undefined) {
    const evalLoaded = await readDatasetRecords(opts.eval, {
      format: config.datasetFormat,
      displayRoot: opts.displayRoot,
    });
    checkBadRecords(evalLoaded, config.maxBadRecordFraction, 'eval dataset', warn);
    trainRecords = trainLoaded.records;
    evalRecords = evalLoaded.records;
    evalFiles = evalLoaded.files;
    bad = bad.concat(evalLoaded.bad);
  } else {
    const split = splitHeldOut(trainLoaded.records, {
      fraction: config.evalFraction,
      count: config.evalRecords,
      seed: config.seed,
    });
    trainRecords = split.train;
    evalRecords = split.eval;
  }

  const formats: Partial<Record<DatasetFormat, number>> = {};
  for (const r of [...trainRecords, ...evalRecords]) formats[r.format] = (formats[r.format] ?? 0) + 1;

  const tokOpts = {
    template: config.promptTemplate,
    trainOnPrompt: config.trainOnPrompt,
    maxLength: config.maxLength,
    truncation: config.truncation,
    ...(opts.chatClock === undefined ? {} : { chatClock: opts.chatClock }),
  };
  const unmaskable: BadRecord[] = [];
  const tooLong: (RecordSource & { length: number })[] = [];
  const noTargets: (RecordSource & { length: number })[] = [];
  const truncated: (RecordSource & { length: number })[] = [];
  // Every id is below the tokenizer's size, so only a tokenizer larger than the model needs the check.
  const vocabSize =
    opts.vocabSize !== undefined && tokenizer.vocabSize > opts.vocabSize ? opts.vocabSize : null;
  const checkIds = (sample: TokenizedSample) => {
    if (vocabSize === null) return;
    const bad = sample.ids.find((id) => id >= vocabSize);
    if (bad === undefined) return;
    const token = tokenizer.idToToken(bad);
    throw new UserError(
      `${sample.source.file}:${sample.source.line}: token id ${bad}${token === undefined ? '' : ` (${JSON.stringify(token)})`} ` +
        `is outside the model's vocabulary (vocab_size ${vocabSize}): the tokenizer has tokens the model has no ` +
        "embedding for; use the model's own tokenizer files, or remove that token from the data",
    );
  };
  const tokenizeAll = (records: readonly DatasetRecord[]): TokenizedSample[] => {
    const out: TokenizedSample[] = [];
    for (const r of records) {
      const t = tokenizeRecord(r, tokenizer, tokOpts);
      if ('sample' in t) {
        checkIds(t.sample);
        out.push(t.sample);
        if (t.sample.truncated) truncated.push({ ...t.sample.source, length: t.sample.ids.length });
      } else if (t.dropped === 'unmaskable') {
        unmaskable.push({ ...t.source, reason: t.reason ?? 'cannot be masked' });
      } else {
        (t.dropped === 'too-long' ? tooLong : noTargets).push({ ...t.source, length: t.length });
      }
    }
    return out;
  };
  const train = tokenizeAll(trainRecords);
  // The training split's own drops, for the message below (the lists go on to include the eval split's).
  const trainTooLong = tooLong.length;
  const trainNoTargets = noTargets.length;
  const evalSamples = tokenizeAll(evalRecords);
  if (unmaskable.length > 0) {
    // Records the chat template cannot mask exactly are bad records too, under the same policy.
    const total = trainRecords.length + evalRecords.length + bad.length;
    const fraction = (bad.length + unmaskable.length) / total;
    const summary = `${unmaskable.length} of ${total} records cannot be masked for a response-only loss`;
    if (fraction > config.maxBadRecordFraction) {
      throw new UserError(
        `${summary} (with the other bad records ${(100 * fraction).toFixed(2)}%, above maxBadRecordFraction ` +
          `${config.maxBadRecordFraction}):\n${formatBadRecords(unmaskable)}`,
      );
    }
    warn(`${summary}; skipping them:\n${formatBadRecords(unmaskable)}`);
    bad = bad.concat(unmaskable);
  }

  if (truncated.length) {
    warn(
      `${truncated.length} samples are longer than maxLength ${config.maxLength} and were truncated (their EOS is ` +
        `lost; raise maxLength or set truncation: "drop" to leave them out): ${listSources(truncated)}`,
    );
  }
  if (tooLong.length) {
    warn(
      `${tooLong.length} samples are longer than maxLength ${config.maxLength} and were left out ` +
        `(truncation: "drop"): ${listSources(tooLong)}`,
    );
  }
  if (noTargets.length) {
    warn(
      `${noTargets.length} samples were left out because their prompt alone fills maxLength ${config.maxLength} ` +
        `(no response token would be trained): ${listSources(noTargets)}`,
    );
  }
  if (train.length === 0) {
    throw new UserError(
      `the training split is empty after tokenization: of its ${trainRecords.length} records, ${trainTooLong} are ` +
        `longer than maxLength ${config.maxLength} and ${trainNoTargets} have no response token within it; ` +
        'raise maxLength',
    );
  }
  const report: DataReport = {
    trainFiles: trainLoaded.files,
    evalFiles,
    formats,
    badRecords: bad.length,
    badExamples: bad.slice(0, 20),
    truncated: truncated.length,
    droppedTooLong: tooLong.length,
    droppedNoTargets: noTargets.length,
    trainSamples: train.length,
    evalSamples: evalSamples.length,
    trainTargetTokens: train.reduce((n, s) => n + sampleTargetCount(s), 0),
    longestSample: [...train, ...evalSamples].reduce((m, s) => Math.max(m, s.ids.length), 0),
  };
  return { train, eval: evalSamples, report };
}
