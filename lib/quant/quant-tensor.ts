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
