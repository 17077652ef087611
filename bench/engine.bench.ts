/**
 * Engine benchmarks (issue: tensor engine):
 * - the fused MoKA update vs materialising ΔW, forward+backward, 4096x4096 layer, 512 tokens, float32 CPU;
 * - a plain 2048x4096x4096 matmul through the engine vs the same matmul in a bare ORT session.
 */
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { Graph, Session, grad, linear, matmul, type Tensor } from '../lib/engine/index.ts';
import {
  kroneckerMixture,
  materializedKroneckerDelta,
  mokaGate,
  type KroneckerGroup,
} from '../lib/adapters/kronecker-mixture.ts';
import { medianMs, randomFloat32, round, type BenchEntry, type Suite } from './harness.ts';

export async function fusedVsMaterialized(
  m: number,
  n: number,
  shape: [number, number, number, number],
): Promise<BenchEntry> {
  const tokens = 512;
  const k = 2;
  const [ma, na, mb, nb] = shape;
  const build = (materialize: boolean) => {
    const g = new Graph(materialize ? 'materialized' : 'fused');
    const x = g.input('x', 'float32', [tokens, n]);
    const gy = g.input('gy', 'float32', [tokens, m]);
    const gate = g.input('g', 'float32', [k]);
    const group: KroneckerGroup = {
      shape,
      a: g.input('a', 'float32', [k, ma, na]),
      b: g.input('b', 'float32', [k, mb, nb]),
    };
    const alpha = mokaGate(gate);
    const y = materialize
      ? linear(x, materializedKroneckerDelta([group], alpha))
      : kroneckerMixture(x, [group], alpha, m);
    // Backward from an upstream gradient: factors, gate and the layer input (as in training).
    const [dx, dg, da, db] = grad(y, [x, gate, group.a, group.b], { seed: gy });
    const outputs: Record<string, Tensor> = { y, dx: dx!, dg: dg!, da: da!, db: db! };
    return new Session(g, { inputs: [x, gy, gate, group.a, group.b], outputs });
  };
  const feeds = {
    x: randomFloat32(tokens * n, 1),
    gy: randomFloat32(tokens * m, 2),
    g: Float32Array.of(0.1, -0.2),
    a: randomFloat32(k * ma * na, 3),
    b: randomFloat32(k * mb * nb, 4),
  };
  const fused = build(false);
  const materialized = build(true);
  // Steady state: the first runs of a session grow its memory arena (page faults), so warm up well.
  const tFused = await medianMs(() => fused.run(feeds), 15, 5);
  const tMat = await medianMs(() => materialized.run(feeds), 3, 1);
  await fused.release();
  await materialized.release();
  return {
    name: `moka.fused_vs_materialized.fwd_bwd.${m}x${n}`,
    value: round(tFused),
    unit: 'ms',
    baseline: 'materialize ΔW = Σ α_i kron(A_i, B_i), then x·ΔWᵀ (same graph engine, same session options)',
    baselineValue: round(tMat),
    ratio: round(tMat / tFused),
    notes: `${tokens} tokens, float32, CPU provider, 2 components ${ma}x${na} ⊗ ${mb}x${nb}; forward + backward (dx, dA, dB, dg)`,
  };
}

/** A MatMul model written directly with onnx-proto: the bare-ORT comparison. */
function bareMatmulModel(m: number, k: number, n: number): Uint8Array {
  const { onnx } = onnxProto;
  const vi = (name: string, dims: number[]) => ({
    name,
    type: { tensorType: { elemType: 1, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 10,
      opsetImport: [{ domain: '', version: 21 }],
      graph: {
        name: 'bare',
        node: [{ opType: 'MatMul', input: ['a', 'b'], output: ['c'] }],
        input: [vi('a', [m, k]), vi('b', [k, n])],
        output: [vi('c', [m, n])],
      },
    }),
  ).finish();
}

async function matmulOverhead(): Promise<BenchEntry> {
  const [m, k, n] = [2048, 4096, 4096];
  const a = randomFloat32(m * k, 5);
  const b = randomFloat32(k * n, 6);
  const g = new Graph('matmul');
  const at = g.input('a', 'float32', [m, k]);
  const bt = g.input('b', 'float32', [k, n]);
  const engine = new Session(g, { inputs: [at, bt], outputs: { c: matmul(at, bt) } });
  const bare = await ort.InferenceSession.create(bareMatmulModel(m, k, n), { executionProviders: ['cpu'] });
  const feeds = { a, b };
  const bareFeeds = { a: new ort.Tensor('float32', a, [m, k]), b: new ort.Tensor('float32', b, [k, n]) };
  // Interleave the two so that machine noise hits both alike.
  const tEngine: number[] = [];
  const tBare: number[] = [];
  await engine.run(feeds);
  await bare.run(bareFeeds);
  for (let i = 0; i < 5; i++) {
    tEngine.push(await medianMs(() => engine.run(feeds), 1, 0));
    tBare.push(await medianMs(() => bare.run(bareFeeds), 1, 0));
  }
  const med = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const flops = 2 * m * k * n;
  const gEngine = flops / (med(tEngine) / 1e3) / 1e9;
  const gBare = flops / (med(tBare) / 1e3) / 1e9;
  await engine.release();
  await bare.release();
  return {
    name: 'engine.matmul.2048x4096x4096.gflops',
    value: round(gEngine),
    unit: 'GFLOP/s',
    baseline: 'the same MatMul in a bare onnxruntime-node session',
    baselineValue: round(gBare),
    ratio: round(gEngine / gBare),
    notes:
      'float32, CPU provider, end to end per run (includes the 32 MB output copy); ratio ≥ 0.95 means overhead < 5%',
  };
}

export const engineSuite: Suite = {
  name: 'engine',
  run: async () => [await fusedVsMaterialized(4096, 4096, [64, 64, 64, 64]), await matmulOverhead()],
};
