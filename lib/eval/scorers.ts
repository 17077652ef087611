/**
 * The scorers: multiple-choice items through shared-context log-likelihood scoring, generation items through
 * greedy decoding or beam search with answer extraction. Both work in chunks of items so progress can be
 * reported while the batches inside a chunk stay full.
 */
import { beamSearch } from '../model/beam-search.ts';
import { generateTokens } from '../model/generation.ts';
import type { LlamaModel } from '../model/llama-model.ts';
import type { ScoreResult } from '../model/scoring.ts';
import type { SharedContextScorer } from '../model/shared-context-scoring.ts';
import type { MultipleChoicePrompt } from './prompts.ts';
import { choiceRequests, groupRequests } from './requests.ts';

/** Items per chunk between progress reports. */
const CHUNK = 64;

/**
 * The log-likelihood of each choice of each item (ScoreResult per choice, in choice order). Requests of a chunk
 * that share context tokens (the choices of one question) run their context once.
 */
export async function scoreMultipleChoice(
  scorer: SharedContextScorer,
  prompts: readonly MultipleChoicePrompt[],
  batchSize: number,
  onProgress: (done: number) => void,
): Promise<ScoreResult[][]> {
  const tokenizer = scorer.model.tokenizer();
  const out: ScoreResult[][] = [];
  for (let start = 0; start < prompts.length; start += CHUNK) {
    const chunk = prompts.slice(start, start + CHUNK);
    const perItem = chunk.map(choiceRequests);
    const flat = perItem.flat();
    const { groups, placement } = groupRequests(tokenizer, flat);
    const scored = await scorer.score(groups, { batchSize });
    let at = 0;
    for (const reqs of perItem) {
      out.push(
        reqs.map(() => {
          const [g, c] = placement[at++]!;
          return scored[g]![c]!;
        }),
      );
    }
    onProgress(Math.min(start + CHUNK, prompts.length));
  }
  return out;
}

export interface GenerationSettings {
  maxNewTokens: number;
  numBeams: number;
}

/** Generated text for each prompt (the prompt tokenized with the checkpoint's BOS, no chat template). */
export async function generateOutputs(
  model: LlamaModel,
  prompts: readonly string[],
  settings: GenerationSettings,
  onProgress: (done: number) => void,
): Promise<string[]> {
  const tokenizer = model.tokenizer();
  const out: string[] = [];
  for (const prompt of prompts) {
    const ids = tokenizer.encode(prompt);
    const text =
      settings.numBeams > 1
        ? (await beamSearch(model, ids, { numBeams: settings.numBeams, maxNewTokens: settings.maxNewTokens })).text
        : (await generateTokens(model, ids, { maxNewTokens: settings.maxNewTokens })).text;
    out.push(text);
    onProgress(out.length);
  }
  return out;
}
