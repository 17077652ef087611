/**
 * One checkpoint tensor as the quantized formats produce and consume it: name, safetensors dtype, shape and
 * little-endian bytes. The serializers turn a quantized weight into a list of these and back, independent of how
 * the list is stored (one safetensors file, shards, or memory in tests).
 */
import type { SafetensorsDtype } from '../model/dtype-convert.ts';

export interface QuantTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  bytes: Uint8Array;
}

/** Looks a tensor up by name: null when the checkpoint has no such tensor. */
export type TensorSource = (name: string) => Promise<QuantTensor | null>;

/** A TensorSource over tensors already in memory. */
export function tensorSourceOf(tensors: readonly QuantTensor[]): TensorSource {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  return (name) => Promise.resolve(byName.get(name) ?? null);
}

/** A quant-state tensor's bytes as a JSON object; `fail` says what is wrong (it throws). */
export function parseQuantStateJson(
  bytes: Uint8Array,
  fail: (what: string) => never,
): Record<string, unknown> {
  let state: unknown;
  try {
    state = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return fail('its quant_state tensor is not UTF-8 JSON');
  }
  if (state === null || typeof state !== 'object' || Array.isArray(state)) {
    return fail('its quant_state is not a JSON object');
  }
  return state as Record<string, unknown>;
}
