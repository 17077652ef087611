/**
 * ORT's pre-packing of matmul weights (SessionOptions.prepacking): off by default for models with external
 * weights, where the packed copy doubled each weight in memory; kept for int4's MatMulNBits, whose fast kernel
 * runs on the weights it pre-packed.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { Graph, Session, linear, type Tensor } from '../../lib/engine/index.ts';
import { prepacksByDefault } from '../../lib/engine/session.ts';
import { quantizeInt4 } from '../../lib/quant/int4.ts';
import { quantizedLinear, quantizedWeightTensors } from '../../lib/quant/quantized-linear.ts';

describe('pre-packing', () => {
  // Linux only: it reads the process's anonymous resident memory from /proc.
  it.runIf(process.platform === 'linux')(
    'a model with external weights gets no pre-packed copy of them unless asked (prepacking)',
    async () => {
      const n = 4096; // a 64 MB float32 weight: ORT pre-packs a constant MatMul B into a copy as large
      const g = new Graph('prepack');
      const w = g.weight(
        'w',
        'float32',
        [n, n],
        Float32Array.from({ length: n * n }, (_, i) => (i % 13) / 13),
      );
      const x = g.input('x', 'float32', [1, n]);
      const rssAnonMB = () =>
        Number(/^RssAnon:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
      const grown = async (prepacking?: boolean) => {
        const s = new Session(
          g,
          { inputs: [x], outputs: { y: linear(x, w) } },
          {
            externalDataTotalBytes: 1024,
            memArena: false,
            ...(prepacking === undefined ? {} : { prepacking }),
          },
        );
        s.emit(new Map()); // writes the external weights file before the measurement starts
        const before = rssAnonMB();
        await s.run({ x: new Float32Array(n).fill(1) });
        const after = rssAnonMB();
        await s.release();
        return after - before;
      };
      await grown(false); // the first session in a process also sets up ORT's thread pools
      const byDefault = await grown();
      const asked = await grown(true);
      // The packed copy is 64 MB; what else a session allocates here stays under 16.
      expect(asked).toBeGreaterThan(56);
      expect(byDefault).toBeLessThan(16);
    },
  );

  it('stays on by default for int4 models (MatMulNBits) and models with inline weights', () => {
    const n = 64;
    const values = Float32Array.from({ length: n * n }, (_, i) => ((i * 7) % 11) / 11 - 0.5);
    const g = new Graph('int4-prepack');
    const x = g.input('x', 'float32', [1, n]);
    const y = quantizedLinear(
      x,
      quantizedWeightTensors(g, 'w', quantizeInt4(values, [n, n], { blockSize: 32 })),
    );
    const f = g.weight('f', 'float32', [n, n], values);
    const z = linear(x, f);
    const emit = (outputs: Record<string, Tensor>, externalDataTotalBytes?: number) =>
      new Session(g, { inputs: [x], outputs }, { externalDataTotalBytes }).emit(new Map());
    const int4External = emit({ y }, 1024);
    expect(int4External.external).not.toBeNull();
    expect(int4External.ops).toContain('com.microsoft:MatMulNBits');
    expect(prepacksByDefault(int4External)).toBe(true);
    const floatExternal = emit({ z }, 1024);
    expect(floatExternal.external).not.toBeNull();
    expect(prepacksByDefault(floatExternal)).toBe(false);
    expect(prepacksByDefault(emit({ z }))).toBe(true);
  });
});
