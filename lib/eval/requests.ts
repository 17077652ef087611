/**
 * Request building: a multiple-choice prompt becomes one loglikelihood(context, continuation) request per
 * choice (lm-eval `construct_requests`), tokenized with the tokenizer's context/continuation entry point, and
 * requests that share their context tokens are grouped so the context runs once (shared-context scoring).
 */
import type { Tokenizer } from '../model/tokenizer.ts';
import type { SharedContextRequest } from '../model/shared-context-scoring.ts';
import type { MultipleChoicePrompt } from './prompts.ts';

export interface TextRequest {
  context: string;
  continuation: string;
}

/** The (context, continuation) pair scored for each choice of a prompt, in choice order. */
export function choiceRequests(p: MultipleChoicePrompt): TextRequest[] {
  if (p.contexts.length === 1) {
    return p.continuations.map((continuation) => ({ context: p.contexts[0]!, continuation }));
  }
  return p.contexts.map((context) => ({ context, continuation: p.continuations[0]! }));
}

/** Groups of requests with identical context tokens, and where each request's result lands. */
export interface GroupedRequests {
  groups: SharedContextRequest[];
  /** For request i: [group index, continuation index]. */
  placement: [number, number][];
}

/**
 * Tokenizes requests lm-eval style (`Tokenizer.encodeContextContinuation`: the context with BOS, its trailing
 * whitespace moved to the continuation, the continuation being what the joint encoding adds) and groups those
 * whose context tokens are equal, in first-seen order.
 */
export function groupRequests(tokenizer: Tokenizer, requests: readonly TextRequest[]): GroupedRequests {
  const byContext = new Map<string, number>();
  const groups: { context: number[]; continuations: number[][] }[] = [];
  const placement: [number, number][] = [];
  for (const r of requests) {
    const pair = tokenizer.encodeContextContinuation(r.context, r.continuation);
    const key = pair.context.join(',');
    let g = byContext.get(key);
    if (g === undefined) {
      g = groups.length;
      byContext.set(key, g);
      groups.push({ context: pair.context, continuations: [] });
    }
    placement.push([g, groups[g]!.continuations.length]);
    groups[g]!.continuations.push(pair.continuation);
  }
  return { groups, placement };
}
