/** In-graph dropout masks: exact against the TypeScript reference, seeded, and with the right statistics. */
import { describe, expect, it } from 'vitest';
import { Graph, Session, dropoutMask, dropoutMaskReference, mul } from '../../lib/engine/index.ts';
import { gradCheck } from '../../lib/engine/gradcheck.ts';

async function mask(shape: number[], seed: bigint, p: number, salt = 0): Promise<Float32Array> {
  const g = new Graph('mask');
  const like = g.input('like', 'float32', shape);
  const s = g.input('seed', 'int64', []);
  const session = new Session(g, { inputs: [like, s], outputs: { m: dropoutMask(like, s, p, salt) } });
  const n = shape.reduce((a, b) => a * b, 1);
  const out = await session.run({ like: new Float32Array(n), seed: BigInt64Array.of(seed) });
  await session.release();
  return out.m!.data as Float32Array;
}

describe('dropoutMask', () => {
  it('equals the TypeScript reference exactly (uint64 SplitMix64 in ONNX)', async () => {
    for (const [seed, salt] of [
      [0n, 0],
      [123456789n, 7],
      [-5n, 0xffffffff],
    ] as const) {
      const got = await mask([7, 11], seed, 0.3, salt);
      expect(Array.from(got)).toEqual(Array.from(dropoutMaskReference(77, seed, 0.3, salt), Math.fround));
    }
  });

  it('is the same for the same seed and differs across seeds and salts', async () => {
    const a = await mask([64, 64], 42n, 0.1);
    expect(Array.from(await mask([64, 64], 42n, 0.1))).toEqual(Array.from(a));
    expect(Array.from(await mask([64, 64], 43n, 0.1))).not.toEqual(Array.from(a));
    expect(Array.from(await mask([64, 64], 42n, 0.1, 1))).not.toEqual(Array.from(a));
  });

  it('drops a fraction p of the elements and keeps the mean at 1', async () => {
    const p = 0.25;
    const m = await mask([256, 256], 9n, p);
    const dropped = m.filter((v) => v === 0).length / m.length;
    // 65,536 Bernoulli(0.25) draws: standard deviation 0.0017, so ±0.01 is about 6 sigma.
    expect(Math.abs(dropped - p)).toBeLessThan(0.01);
    expect(new Set(m)).toEqual(new Set([0, Math.fround(1 / (1 - p))]));
    expect(Math.abs(m.reduce((s, v) => s + v, 0) / m.length - 1)).toBeLessThan(0.015);
  });

  it('p = 0 keeps everything; x·mask has the gradient mask (finite differences, rel < 1e-6)', async () => {
    expect(new Set(await mask([10, 10], 3n, 0))).toEqual(new Set([1]));
    const res = await gradCheck(
      (t) => mul(t.x!, dropoutMask(t.x!, t.seed!, 0.4)),
      [
        { name: 'x', shape: [4, 6] },
        { name: 'seed', shape: [], data: BigInt64Array.of(11n) },
      ],
    );
    expect(res.maxRelativeError).toBeLessThan(1e-6);
  });
});
