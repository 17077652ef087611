/**
 * The scorers: multiple-choice items through shared-context log-likelihood scoring, generation items through
 * greedy decoding or beam search with answer extraction. Both work in chunks of items so progress can be
 * reported while the batches inside a chunk stay full.
 */
import { beamSearch } from '../model/beam-search.ts';
import { generateText } from '../model/generation.ts';
import type { LlamaModel } from '../model/llama-model.ts';
import type { ScoreResult } from '../model/scoring.ts';
import type { SharedContextScorer } from '../model/shared-context-scoring.ts';
import type { MultipleChoicePrompt } from './prompts.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { choiceRequests, groupRequests, tokenizeRequests, type TokenRequest } from './requests.ts';

/** Items per chunk between progress reports. */
const CHUNK = 64;

/** The token requests of each item (one per choice), in item order; see tokenizeRequests for the errors. */
export function tokenizeMultipleChoice(
  tokenizer: Tokenizer,
  prompts: readonly MultipleChoicePrompt[],
  task: string,
): TokenRequest[][] {
  return prompts.map((p, i) => tokenizeRequests(tokenizer, choiceRequests(p), `task ${task} item ${i + 1}`));
}

/**
 * The log-likelihood of each choice of each item (ScoreResult per choice, in choice order). Requests of a chunk
 * that share context tokens (the choices of one question) run their context once.
 */
export async function scoreMultipleChoice(
  scorer: SharedContextScorer,
  items: readonly TokenRequest[][],
  batchSize: number,
  onProgress: (done: number) => void,
): Promise<ScoreResult[][]> {
  const out: ScoreResult[][] = [];
  for (let start = 0; start < items.length; start += CHUNK) {
    const chunk = items.slice(start, start + CHUNK);
    const { groups, placement } = groupRequests(chunk.flat());
    const scored = await scorer.score(groups, { batchSize });
    let at = 0;
    for (const reqs of chunk) {
      out.push(
        reqs.map(() => {
          const [g, c] = placement[at++]!;
          return scored[g]![c]!;
        }),
      );
    }
    onProgress(Math.min(start + CHUNK, items.length));
  }
  return out;
}

export interface GenerationSettings {
  maxNewTokens: number;
  numBeams: number;
}

/**
 * Generated text for each prompt, without a chat template: greedy through `generateText` (the model's prompt
 * encoding, with BOS), beam search from the same encoding.
 */
export async function generateOutputs(
  model: LlamaModel,
  prompts: readonly string[],
  settings: GenerationSettings,
  onProgress: (done: number) => void,
): Promise<string[]> {
  const out: string[] = [];
  for (const prompt of prompts) {
    const text =
      settings.numBeams > 1
        ? (
            await beamSearch(model, model.tokenizer().encodePrompt(prompt), {
              numBeams: settings.numBeams,
              maxNewTokens: settings.maxNewTokens,
            })
          ).text
        : (await generateText(model, prompt, { maxNewTokens: settings.maxNewTokens })).text;
    out.push(text);
    onProgress(out.length);
  }
  return out;
}
