/**
 * Adapter benchmarks (issue: adapters), CPU provider, float32, 512 tokens:
 * - the fused MoKA update vs materialising ΔW on a 4096→11008 layer (the 4096x4096 case is in the engine suite);
 * - a whole frozen 4096x4096 layer with MoKA vs with LoRA of the same trainable-parameter count, forward +
 *   backward including the gradient to the layer input;
 * - trainable parameters per adapter type for LLaMA 2 7B and LLaMA 3 8B, from the planner.
 */
import { readFileSync } from 'node:fs';
import { Graph, Session, add, grad, linear, type Tensor } from '../lib/engine/index.ts';
import { kroneckerMixture, mokaGate } from '../lib/adapters/kronecker-mixture.ts';
import { parseLlamaConfig } from '../lib/model/config.ts';
import { parseAdapterConfig } from '../lib/adapters/adapter-config.ts';
import { planAdapter } from '../lib/adapters/planner.ts';
import { ADAPTER_TYPES } from '../lib/adapters/adapter-config.ts';
import { fusedVsMaterialized } from './engine.bench.ts';
import { medianMs, randomFloat32, round, type BenchEntry, type Suite } from './harness.ts';

const TOKENS = 512;

/** Forward + backward (dX and the adapter's gradients) of a frozen 4096x4096 layer with an adapter. */
async function layerStep(kind: 'moka' | 'lora'): Promise<{ ms: number; params: number }> {
  const n = 4096;
  const m = 4096;
  const g = new Graph(`layer-${kind}`);
  const w = g.weight(
    'w0',
    'float32',
    [m, n],
    randomFloat32(m * n, 11).map((v) => v * 0.02),
  );
  const x = g.input('x', 'float32', [TOKENS, n]);
  const gy = g.input('gy', 'float32', [TOKENS, m]);
  let y: Tensor;
  let trainables: Tensor[];
  const feeds: Record<string, Float32Array> = {
    x: randomFloat32(TOKENS * n, 12),
    gy: randomFloat32(TOKENS * m, 13),
  };
  if (kind === 'moka') {
    const a = g.input('a', 'float32', [2, 64, 64]);
    const b = g.input('b', 'float32', [2, 64, 64]);
    const gate = g.input('g', 'float32', [2]);
    y = add(linear(x, w), kroneckerMixture(x, [{ shape: [64, 64, 64, 64], a, b }], mokaGate(gate), m));
    trainables = [a, b, gate];
    Object.assign(feeds, {
      a: randomFloat32(8192, 14),
      b: randomFloat32(8192, 15),
      g: Float32Array.of(0, 0),
    });
  } else {
    // LoRA r = 2 has 2·(4096 + 4096) = 16,384 parameters: the MoKA side's 16,384 factors (+ 2 gate logits).
    const r = 2;
    const la = g.input('la', 'float32', [r, n]);
    const lb = g.input('lb', 'float32', [m, r]);
    y = add(linear(x, w), linear(linear(x, la), lb));
    trainables = [la, lb];
    Object.assign(feeds, { la: randomFloat32(r * n, 16), lb: randomFloat32(m * r, 17) });
  }
  const grads = grad(y, [x, ...trainables], { seed: gy });
  const outputs: Record<string, Tensor> = { y };
  grads.forEach((t, i) => (outputs[`d${i}`] = t));
  const s = new Session(g, { inputs: [x, gy, ...trainables], outputs });
  const ms = await medianMs(() => s.run(feeds), 7, 2);
  await s.release();
  return {
    ms,
    params: trainables.reduce((acc, t) => acc + t.shape.reduce((p: number, d) => p * (d as number), 1), 0),
  };
}

async function mokaVsLora(): Promise<BenchEntry> {
  const lora = await layerStep('lora');
  const moka = await layerStep('moka');
  return {
    name: 'moka_vs_lora.layer_fwd_bwd.4096x4096',
    value: round(moka.ms),
    unit: 'ms',
    baseline: `LoRA r=2 (${lora.params} params) on the same frozen layer`,
    baselineValue: round(lora.ms),
    ratio: round(lora.ms / moka.ms),
    notes:
      `MoKA 2 components 64x64 ⊗ 64x64 (${moka.params} params incl. gate); ${TOKENS} tokens, float32, CPU; ` +
      'forward + backward with the gradient to the layer input; ratio ≥ 0.83 means MoKA ≤ 1.2x LoRA (FLOP floor ≈ 1.06)',
  };
}

function paramEntries(): BenchEntry[] {
  const fixtures = { 'llama-2-7b': 'LLaMA 2 7B', 'llama-3-8b': 'LLaMA 3 8B' };
  const out: BenchEntry[] = [];
  for (const [file, label] of Object.entries(fixtures)) {
    const llama = parseLlamaConfig(
      JSON.parse(readFileSync(new URL(`../test/fixtures/configs/${file}.json`, import.meta.url), 'utf8')),
    );
    const counts = Object.fromEntries(
      ADAPTER_TYPES.map((t) => [t, planAdapter(llama, parseAdapterConfig({ type: t })).totalParams]),
    );
    for (const t of ADAPTER_TYPES) {
      out.push({
        name: `params.${file}.${t}`,
        value: counts[t]!,
        unit: 'params',
        baseline: 'lora (r=8, alpha=16) on the same targets',
        baselineValue: counts.lora!,
        ratio: round(counts.lora! / counts[t]!),
        notes: `${label}, default config of each type (targets q,k,v,o; see docs/adapters.md); ratio = fewer params than LoRA`,
      });
    }
  }
  return out;
}

export const adaptersSuite: Suite = {
  name: 'adapters',
  run: async () => [
    await fusedVsMaterialized(11008, 4096, [172, 64, 64, 64]),
    await mokaVsLora(),
    ...paramEntries(),
  ],
};
