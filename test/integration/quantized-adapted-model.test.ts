/**
 * The model with a 4-bit base and with adapters, end to end on tiny generated checkpoints:
 * - a quantized checkpoint (NF4 + double quant, int4) gives the logits of its dequantized weights run in float32
 *   (rel < 1e-4: the 4-bit path differs only in summation order and where the decode happens);
 * - an adapter saved and loaded gives bit-identical logits to the same adapter in memory;
 * - `moka merge` writes a checkpoint whose logits equal the unmerged adapter's (rel < 1e-4), on a 4-bit base.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { dequantizeCheckpoint } from '../../lib/quant/dequantize-checkpoint.ts';
import { openFrozenBase } from '../../lib/quant/frozen-base.ts';
import { parseAdapterConfig, type AdapterConfigInput } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { saveAdapter } from '../../lib/adapters/adapter-files.ts';
import { adapterHooks, baseRowNorms, loadAdaptedModel } from '../../lib/adapters/adapted-model.ts';
import { mergeCheckpoint } from '../../lib/adapters/merge-checkpoint.ts';
import { resolveTargets } from '../../lib/adapters/targets.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';

let root: string;
const tiny = () => join(root, 'tiny');
const SEQS = [
  [507, 10, 20, 30, 40, 50, 60],
  [507, 99, 98, 97],
];

function relErr(a: Float32Array[], b: Float32Array[]): number {
  let num = 0;
  let den = 0;
  a.forEach((x, i) =>
    x.forEach((v, j) => {
      num = Math.max(num, Math.abs(v - b[i]![j]!));
      den = Math.max(den, Math.abs(b[i]![j]!));
    }),
  );
  return num / den;
}

async function logitsOf(dir: string, adapter?: string): Promise<Float32Array[]> {
  const model = await loadAdaptedModel(dir, { adapter, intraOpThreads: 1 });
  try {
    return await model.logits(SEQS);
  } finally {
    await model.close();
  }
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'moka-int-'));
  await writeTinyCheckpoint({
    dir: tiny(),
    seed: 3,
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
  });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.each([
  ['nf4', { format: 'nf4' as const, doubleQuant: true }],
  ['int4', { format: 'int4' as const, blockSize: 32 }],
])('a %s base', (name, q) => {
  it('gives the logits of its dequantized weights in float32 (rel < 1e-4)', async () => {
    const qdir = join(root, `q-${name}`);
    await quantizeCheckpoint({ modelDir: tiny(), outDir: qdir, ...q });
    const ddir = join(root, `d-${name}`);
    await dequantizeCheckpoint({ modelDir: qdir, outDir: ddir, dtype: 'F32' });
    const base = await openFrozenBase(qdir);
    expect(base.format).toBe(name);
    expect(base.base).toBeDefined();
    await base.close();
    const fromFour = await logitsOf(qdir);
    const fromDeq = await logitsOf(ddir);
    expect(relErr(fromFour, fromDeq)).toBeLessThan(1e-4);
    // And the 4-bit model is not simply the original: quantization changed the weights.
    expect(relErr(fromFour, await logitsOf(tiny()))).toBeGreaterThan(1e-3);
  });
});

const ADAPTERS: Record<string, AdapterConfigInput> = {
  moka: { type: 'moka', targetModules: 'all-linear', plan: { count: 2 } },
  lora: { type: 'lora', r: 2 },
  dora: { type: 'dora', r: 2, targetModules: ['q_proj', 'down_proj'] },
};

describe.each(Object.entries(ADAPTERS))('a %s adapter', (type, cfgIn) => {
  it('saved and loaded gives the logits of the adapter in memory exactly; merged gives them within 1e-4', async () => {
    const qdir = join(root, 'q-nf4');
    const base = await openFrozenBase(qdir);
    const cfg = parseAdapterConfig(cfgIn);
    const norms = await baseRowNorms(
      base,
      resolveTargets(base.config, cfg).map((t) => t.name),
    );
    const rt = createAdapterRuntime(base.config, cfg, { seed: 1, baseRowNorms: (m) => norms.get(m)! });
    const rand = seededRandom(5);
    const values = new Map(
      rt.tensors.map((t) => [t.name, Float32Array.from(randomNormal(t.init.length, rand, 0.05))]),
    );
    const feeds = Object.fromEntries(values);
    const inMemory = LlamaModel.fromParts(base.checkpoint, base.weights, {
      hooks: adapterHooks(rt, base.base),
      feeds,
      intraOpThreads: 1,
    });
    const expected = await inMemory.logits(SEQS);
    await inMemory.close();

    const adir = join(root, `adapter-${type}`);
    await saveAdapter(adir, rt, values, { baseModel: qdir });
    const loaded = await logitsOf(qdir, adir);
    expect(loaded.map((l) => Array.from(l))).toEqual(expected.map((l) => Array.from(l)));
    expect(relErr(loaded, await logitsOf(qdir))).toBeGreaterThan(1e-4); // the adapter does change the output

    const mdir = join(root, `merged-${type}`);
    await mergeCheckpoint({ model: qdir, adapter: adir, out: mdir });
    expect(relErr(await logitsOf(mdir), expected)).toBeLessThan(1e-4);
  });
});
