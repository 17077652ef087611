/**
 * Request building: a multiple-choice prompt becomes one loglikelihood(context, continuation) request per
 * choice (lm-eval `construct_requests`), tokenized with the tokenizer's context/continuation entry point, and
 * requests that share their context tokens are grouped so the context runs once (shared-context scoring).
 * Every request is tokenized before any is scored, so a request the tokenizer refuses fails the run before
 * anything is computed or written.
 */
import { UserError, isUserError } from '../errors.ts';
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

/** A request as token ids: what the model reads before the continuation, and the continuation's tokens. */
export interface TokenRequest {
  context: number[];
  continuation: number[];
}

/**
 * Tokenizes requests lm-eval style through the tokenizer's scoring entry point
 * (`Tokenizer.encodeContextContinuation`: the context with BOS, its trailing whitespace moved to the
 * continuation, the continuation being exactly what its text adds to the joint encoding). A request the tokenizer
 * refuses, or whose continuation has no tokens, is a UserError that starts with `where` (e.g. "task piqa item 12").
 */
export function tokenizeRequests(
  tokenizer: Tokenizer,
  requests: readonly TextRequest[],
  where: string,
): TokenRequest[] {
  return requests.map((r, i) => {
    try {
      const pair = tokenizer.encodeContextContinuation(r.context, r.continuation);
      if (pair.continuation.length === 0) {
        throw new UserError(
          `the continuation ${JSON.stringify(r.continuation)} has no tokens; there is nothing to score`,
        );
      }
      return pair;
    } catch (err) {
      if (!isUserError(err)) throw err;
      throw new UserError(`${where}, request ${i + 1}: ${err.message}`);
    }
  });
}

/** Groups of requests with identical context tokens, and where each request's result lands. */
export interface GroupedRequests {
  groups: SharedContextRequest[];
  /** For request i: [group index, continuation index]. */
  placement: [number, number][];
}

/** Groups requests whose context tokens are equal (the choices of one question), in first-seen order. */
export function groupRequests(requests: readonly TokenRequest[]): GroupedRequests {
  const byContext = new Map<string, number>();
  const groups: { context: number[]; continuations: number[][] }[] = [];
  const placement: [number, number][] = [];
  for (const r of requests) {
    const key = r.context.join(',');
    let g = byContext.get(key);
    if (g === undefined) {
      g = groups.length;
      byContext.set(key, g);
      groups.push({ context: r.context, continuations: [] });
    }
    placement.push([g, groups[g]!.continuations.length]);
    groups[g]!.continuations.push(r.continuation);
  }
  return { groups, placement };
}
