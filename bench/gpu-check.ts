/**
 * GPU check (run on a machine with a GPU; not part of the tests): the same graphs on the CPU provider and on a
 * GPU provider (WebGPU by default, `--provider cuda` when its libraries are installed), comparing results and
 * timing them. Prints one JSON object.
 *
 *   node --import tsx bench/gpu-check.ts [--provider webgpu|cuda]
 *
 * 1. fused MoKA update, forward + backward, 4096x4096, 512 tokens (two 64x64 ⊗ 64x64 components), and the
 *    materialised-ΔW baseline;
 * 2. a 2048x4096x4096 matmul;
 * 3. one training micro-batch (loss and adapter gradients) of a 4-layer, hidden-256 LLaMA with MoKA and LoRA.
 */
import * as ort from 'onnxruntime-node';
import { Graph, Session, grad, linear, matmul, type ProviderName, type Tensor } from '../lib/engine/index.ts';
import { kroneckerMixture, materializedKroneckerDelta, mokaGate } from '../lib/adapters/kronecker-mixture.ts';
import { parseAdapterConfig } from '../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../lib/adapters/adapter-runtime.ts';
import { createLlamaStepProgram } from '../lib/train/llama-step-program.ts';
import { medianMs, randomFloat32 } from './harness.ts';
import { tinyTrainingSetup } from './tiny-training-setup.ts';

const gpu = (
  process.argv.includes('--provider') ? process.argv[process.argv.indexOf('--provider') + 1] : 'webgpu'
) as ProviderName;
const report: Record<string, unknown> = { gpuProvider: gpu, backends: ort.listSupportedBackends() };

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}

async function compare(
  name: string,
  build: () => { session: (p: ProviderName) => Session; feeds: Record<string, Float32Array> },
  runs = 5,
) {
  const { session, feeds } = build();
  const out: Record<string, unknown> = {};
  const results: Record<string, Record<string, ort.Tensor>> = {};
  for (const p of ['cpu', gpu] as ProviderName[]) {
    const s = session(p);
    try {
      results[p] = await s.run(feeds);
      out[`${p}Ms`] = await medianMs(() => s.run(feeds), runs, 1);
      out[`${p}Provider`] = await s.providerFor(feeds);
    } catch (err) {
      out[`${p}Error`] = (err as Error).message.slice(0, 400);
    } finally {
      await s.release();
    }
  }
  if (results.cpu && results[gpu]) {
    out.maxRelErr = Math.max(
      ...Object.keys(results.cpu).map((k) =>
        relErr(results[gpu]![k]!.data as Float32Array, results.cpu![k]!.data as Float32Array),
      ),
    );
  }
  report[name] = out;
  process.stderr.write(`${name}: ${JSON.stringify(out)}\n`);
}

function mokaUpdate(materialize: boolean) {
  const [m, n, T] = [4096, 4096, 512];
  const g = new Graph(materialize ? 'materialized' : 'fused');
  const x = g.input('x', 'float32', [T, n]);
  const gy = g.input('gy', 'float32', [T, m]);
  const gate = g.input('g', 'float32', [2]);
  const a = g.input('a', 'float32', [2, 64, 64]);
  const b = g.input('b', 'float32', [2, 64, 64]);
  const group = { shape: [64, 64, 64, 64] as const, a, b };
  const y = materialize
    ? linear(x, materializedKroneckerDelta([group], mokaGate(gate)))
    : kroneckerMixture(x, [group], mokaGate(gate), m);
  const grads = grad(y, [x, gate, a, b], { seed: gy });
  const outputs: Record<string, Tensor> = { y };
  grads.forEach((t, i) => (outputs[`d${i}`] = t));
  return {
    session: (p: ProviderName) => new Session(g, { inputs: [x, gy, gate, a, b], outputs }, { provider: p }),
    feeds: {
      x: randomFloat32(T * n, 1),
      gy: randomFloat32(T * m, 2),
      g: Float32Array.of(0.1, -0.2),
      a: randomFloat32(8192, 3),
      b: randomFloat32(8192, 4),
    },
  };
}

function bigMatmul() {
  const g = new Graph('matmul');
  const a = g.input('a', 'float32', [2048, 4096]);
  const b = g.input('b', 'float32', [4096, 4096]);
  const c = matmul(a, b);
  return {
    session: (p: ProviderName) => new Session(g, { inputs: [a, b], outputs: { c } }, { provider: p }),
    feeds: { a: randomFloat32(2048 * 4096, 5), b: randomFloat32(4096 * 4096, 6) },
  };
}

async function trainingStep() {
  const setup = await tinyTrainingSetup();
  const { ckpt, weights, batch: tokenBatch } = setup;
  try {
    const runs: [string, ProviderName, 'fp32' | 'fp16'][] = [
      ['cpu', 'cpu', 'fp32'],
      [gpu, gpu, 'fp32'],
      [`${gpu}-fp16`, gpu, 'fp16'],
    ];
    for (const type of ['moka', 'lora'] as const) {
      const out: Record<string, unknown> = {};
      const results: Record<string, { lossSum: number; grads: Map<string, Float32Array> }> = {};
      for (const [label, p, precision] of runs) {
        const runtime = createAdapterRuntime(
          ckpt.config,
          parseAdapterConfig({ type, targetModules: 'all-linear' }),
          { seed: 1 },
        );
        // Non-zero adapter values so every gradient path carries signal.
        const params = new Map(
          runtime.tensors.map((t) => [t.name, randomFloat32(t.init.length, 9).map((v) => v * 0.02)]),
        );
        const program = createLlamaStepProgram({
          config: ckpt.config,
          weights,
          adapter: runtime,
          provider: p,
          precision,
        });
        try {
          results[label] = await program.lossAndGrads(tokenBatch, params);
          out[`${label}Ms`] = await medianMs(() => program.lossAndGrads(tokenBatch, params), 5, 1);
        } catch (err) {
          out[`${label}Error`] = (err as Error).message.slice(0, 400);
        } finally {
          await program.release();
        }
      }
      for (const [label] of runs.slice(1)) {
        const r = results[label];
        if (!results.cpu || !r) continue;
        out[`${label}LossRelErr`] = Math.abs(results.cpu.lossSum - r.lossSum) / Math.abs(results.cpu.lossSum);
        out[`${label}MaxGradRelErr`] = Math.max(
          ...[...results.cpu.grads].map(([k, v]) => relErr(r.grads.get(k)!, v)),
        );
      }
      report[`train_step_${type}_4x256`] = out;
      process.stderr.write(`train ${type}: ${JSON.stringify(out)}\n`);
    }
  } finally {
    await setup.dispose();
  }
}

await compare('moka_fused_fwd_bwd_4096', () => mokaUpdate(false));
await compare('moka_materialized_fwd_bwd_4096', () => mokaUpdate(true), 3);
await compare('matmul_2048x4096x4096', bigMatmul);
await trainingStep();
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
