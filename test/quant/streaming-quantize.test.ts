/** Quantizing a block of rows at a time gives exactly the bytes and error of quantizing the whole tensor. */
import { describe, expect, it } from 'vitest';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';
import { quantizeNf4 } from '../../lib/quant/nf4.ts';
import { quantizeInt4 } from '../../lib/quant/int4.ts';
import { quantizeStreaming, type StreamingOptions } from '../../lib/quant/streaming-quantize.ts';
import { reconstructionError } from '../../lib/quant/reconstruction-error.ts';

const rows = 37;
const cols = 96; // 96 = 1.5 NF4 blocks of 64 per row: chunks must still hold whole blocks
const values = fillNormal(new Float32Array(rows * cols), mulberry32(5), 0.3);
const readRows = async (r0: number, r1: number) => values.slice(r0 * cols, r1 * cols);

describe.each<[string, StreamingOptions]>([
  ['nf4', { format: 'nf4', blockSize: 64 }],
  ['nf4 + double quant', { format: 'nf4', blockSize: 64, doubleQuant: true }],
  ['int4 asymmetric', { format: 'int4', blockSize: 32 }],
  ['int4 symmetric', { format: 'int4', blockSize: 64, symmetric: true }],
])('%s in chunks of ~500 values', (_name, opts) => {
  it('matches the whole-tensor quantization byte for byte, and its reconstruction error', async () => {
    const { weight, error } = await quantizeStreaming(readRows, [rows, cols], {
      ...opts,
      chunkElements: 500,
    });
    const whole =
      opts.format === 'nf4'
        ? quantizeNf4(values, [rows, cols], opts)
        : quantizeInt4(values, [rows, cols], opts);
    expect(weight).toEqual(whole);
    const ref = reconstructionError(values, whole);
    expect(error.relativeFrobenius).toBeCloseTo(ref.relativeFrobenius, 12);
    expect(error.maxAbs).toBe(ref.maxAbs);
  });
});
