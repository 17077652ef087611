/**
 * A key/value cache for incremental decoding: per layer, keys and values of the positions seen so far, in
 * fixed-capacity host buffers [batch, kv_heads, capacity, head_dim]. Slot t holds position t. A decode graph
 * (`buildLlamaGraph` with `cache`) reads all `capacity` slots and masks the unused ones, so its shapes stay fixed
 * while the cache fills (one compiled session per capacity, not one per step); it returns the new tokens'
 * keys/values, which `write` stores.
 */
import type { Feed } from '../engine/index.ts';

export class KvCache {
  readonly keys: Float32Array[] = [];
  readonly values: Float32Array[] = [];
  /** Number of filled slots (positions 0..length−1). */
  length = 0;

  constructor(
    readonly numLayers: number,
    readonly kvHeads: number,
    readonly headDim: number,
    readonly capacity: number,
    readonly batch = 1,
  ) {
    const n = batch * kvHeads * capacity * headDim;
    for (let i = 0; i < numLayers; i++) {
      this.keys.push(new Float32Array(n));
      this.values.push(new Float32Array(n));
    }
  }

  /**
   * Stores `count` positions starting at slot `at`, taken from the first `count` positions of per-layer tensors
   * [batch, kv_heads, srcLen, head_dim] (a graph's present keys/values), and extends `length` to cover them.
   */
  write(
    keys: readonly Float32Array[],
    values: readonly Float32Array[],
    srcLen: number,
    count: number,
    at: number,
  ): void {
    if (at < 0 || at + count > this.capacity) {
      throw new RangeError(`KvCache: slots [${at}, ${at + count}) exceed the capacity ${this.capacity}`);
    }
    if (count > srcLen)
      throw new RangeError(`KvCache: ${count} positions requested from a source of ${srcLen}`);
    const D = this.headDim;
    for (let l = 0; l < this.numLayers; l++) {
      for (const [dst, src] of [
        [this.keys[l]!, keys[l]!],
        [this.values[l]!, values[l]!],
      ] as const) {
        if (src.length !== this.batch * this.kvHeads * srcLen * D) {
          throw new RangeError(
            `KvCache: layer ${l} source has ${src.length} values, not [${this.batch}, ${this.kvHeads}, ${srcLen}, ${D}]`,
          );
        }
        for (let bh = 0; bh < this.batch * this.kvHeads; bh++) {
          dst.set(src.subarray(bh * srcLen * D, (bh * srcLen + count) * D), (bh * this.capacity + at) * D);
        }
      }
    }
    this.length = Math.max(this.length, at + count);
  }

  /** Feeds `past_key_i` / `past_value_i` for a decode graph. */
  feeds(): Record<string, Feed> {
    const out: Record<string, Feed> = {};
    const dims = [this.batch, this.kvHeads, this.capacity, this.headDim];
    for (let l = 0; l < this.numLayers; l++) {
      out[`past_key_${l}`] = { data: this.keys[l]!, dims };
      out[`past_value_${l}`] = { data: this.values[l]!, dims };
    }
    return out;
  }

  /** The 0/1 attention mask [batch, capacity + newTokens]: filled slots and the new tokens are attended. */
  attentionMask(newTokens: number): BigInt64Array {
    const width = this.capacity + newTokens;
    const mask = new BigInt64Array(this.batch * width);
    for (let b = 0; b < this.batch; b++) {
      for (let j = 0; j < width; j++) mask[b * width + j] = j < this.length || j >= this.capacity ? 1n : 0n;
    }
    return mask;
  }
}
