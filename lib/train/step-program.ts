/**
 * The contract between the trainer and whatever computes a loss: a "step program" runs one ONNX Runtime session
 * per micro-batch and returns the SUMMED token loss, the number of counted tokens and the gradient of the summed
 * loss for every trainable tensor. Everything else (accumulation, normalisation, clipping, AdamW, schedules,
 * checkpoints) happens in TypeScript on Float32Arrays, so the trainer can be finished and tested against any
 * program: the LLaMA graph with adapters in production, tiny engine models in the tests.
 *
 * Label convention (read this before writing a program): `labels` are ALREADY SHIFTED. `labels[b, t]` is the token
 * the logits at position t must predict (the input token at t + 1), or −100 where nothing is counted (prompt
 * tokens, padding, the last position). A program therefore computes
 * `crossEntropy(logits, labels, {reduction: 'sum'})` directly, with no slicing, and `tokens` is the number of labels
 * that are not −100.
 */
import { UserError } from '../errors.ts';
import { numElements } from '../model/dtype-convert.ts';

/** Optimizer parameter group: MoKA gates may get their own learning rate and weight decay. */
export type ParamGroup = 'default' | 'gate';

export interface TrainableSpec {
  name: string;
  shape: number[];
  /** initial value */
  init: Float32Array;
  /** optimizer parameter group */
  group: ParamGroup;
}

/** The ignore index of labels (as in PyTorch): the position is not counted. */
export const IGNORE_INDEX = -100;

export interface TokenBatch {
  /** [batchSize, seqLen] token ids, right-padded. */
  inputIds: BigInt64Array;
  /** [batchSize, seqLen] shifted targets (see the module comment); −100 = not counted. */
  labels: BigInt64Array;
  /** [batchSize, seqLen] 1 on real tokens, 0 on padding. */
  attentionMask: Uint8Array;
  batchSize: number;
  seqLen: number;
  /**
   * Packed batches only ([batchSize, seqLen]): the position of each token within its own sample (restarts at 0
   * for every sample of a row), for RoPE.
   */
  positionIds?: BigInt64Array;
  /**
   * Packed batches only ([batchSize, seqLen]): which sample of its row each token belongs to (1, 2, …; 0 on
   * padding). A token may attend only to earlier tokens of the same segment: see `packedAttentionMask`.
   */
  segmentIds?: BigInt64Array;
  /** Seed of the adapter-dropout masks for this micro-batch (training only; set by the trainer). */
  dropoutSeed?: number;
}

export interface StepResult {
  lossSum: number;
  tokens: number;
  grads: Map<string, Float32Array>;
}

export interface StepProgram {
  readonly trainables: readonly TrainableSpec[];
  /**
   * True when the program honours `positionIds` and `segmentIds` (block-diagonal attention). The trainer refuses
   * `packing: true` for a program without it, because a program that ignored them would leak attention across
   * the samples of a packed row.
   */
  readonly supportsPacking?: boolean;
  /**
   * The longest sequence the program accepts (a LLaMA's max_position_embeddings), if it has a limit: the trainer
   * pads batches no further than this.
   */
  readonly maxSeqLen?: number;
  /** Summed loss, counted tokens, gradients of the summed loss. */
  lossAndGrads(batch: TokenBatch, params: ReadonlyMap<string, Float32Array>): Promise<StepResult>;
  /** Summed loss and counted tokens only (evaluation). */
  loss(
    batch: TokenBatch,
    params: ReadonlyMap<string, Float32Array>,
  ): Promise<{ lossSum: number; tokens: number }>;
  /** Extra per-step metrics, e.g. MoKA gate values per layer. */
  metrics?(params: ReadonlyMap<string, Float32Array>): Record<string, number | number[]>;
  release(): Promise<void>;
}

/** Checks the program's trainables once, up front: a wrong shape here would otherwise surface deep in ORT. */
export function validateTrainables(specs: readonly TrainableSpec[]): void {
  if (specs.length === 0) {
    throw new UserError('the step program has no trainable tensors; check the adapter targets');
  }
  const seen = new Set<string>();
  for (const s of specs) {
    if (!s.name) throw new UserError('a trainable tensor has an empty name');
    if (seen.has(s.name)) throw new UserError(`trainable tensor "${s.name}" is listed twice`);
    seen.add(s.name);
    if (!s.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new UserError(
        `trainable tensor "${s.name}" has shape [${s.shape}]; dimensions must be whole numbers`,
      );
    }
    if (s.init.length !== numElements(s.shape)) {
      throw new UserError(
        `trainable tensor "${s.name}" [${s.shape}] has ${s.init.length} initial values, expected ${numElements(s.shape)}`,
      );
    }
    if (s.group !== 'default' && s.group !== 'gate') {
      throw new UserError(
        `trainable tensor "${s.name}" has group "${String(s.group)}"; use "default" or "gate"`,
      );
    }
    for (let i = 0; i < s.init.length; i++) {
      if (!Number.isFinite(s.init[i]!)) {
        throw new UserError(`trainable tensor "${s.name}" has a non-finite initial value at index ${i}`);
      }
    }
  }
}

/** Fresh copies of the initial values (the program's `init` arrays are never written to). */
export function initialParams(specs: readonly TrainableSpec[]): Map<string, Float32Array> {
  return new Map(specs.map((s) => [s.name, Float32Array.from(s.init)]));
}

/** Labels that count (not −100): what `tokens` of a program's result must equal. */
export function countTargets(labels: BigInt64Array): number {
  let n = 0;
  const ignore = BigInt(IGNORE_INDEX);
  for (let i = 0; i < labels.length; i++) if (labels[i] !== ignore) n++;
  return n;
}

/** Checks a program's step result against its trainables (shape of every gradient, finite counts). */
export function checkStepResult(specs: readonly TrainableSpec[], result: StepResult, what: string): void {
  if (!Number.isFinite(result.tokens) || result.tokens < 0) {
    throw new Error(`${what}: the step program returned tokens = ${result.tokens}`);
  }
  for (const s of specs) {
    const g = result.grads.get(s.name);
    if (!g) throw new Error(`${what}: the step program returned no gradient for "${s.name}"`);
    if (g.length !== s.init.length) {
      throw new Error(`${what}: gradient of "${s.name}" has ${g.length} values, expected ${s.init.length}`);
    }
  }
}
