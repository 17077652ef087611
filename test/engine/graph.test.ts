/** Build-time checks, differentiation scope, emission and sessions. */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import {
  Graph,
  GraphError,
  Session,
  add,
  attention,
  cudaProviderInstalled,
  gather,
  grad,
  linear,
  matmul,
  mul,
  reduceSum,
  reshape,
  rmsNorm,
} from '../../lib/engine/index.ts';

describe('graph building', () => {
  it('a shape mismatch fails at build time naming the op and both shapes', () => {
    const g = new Graph('bad');
    const a = g.input('a', 'float32', ['batch', 3]);
    const b = g.input('b', 'float32', [4, 5]);
    expect(() => matmul(a, b)).toThrow(GraphError);
    expect(() => matmul(a, b)).toThrow(
      /matmul\(float32\[batch, 3\], float32\[4, 5\]\): inner dimensions differ \(3 vs 4/,
    );
    expect(() => add(a, b)).toThrow(/add\(float32\[batch, 3\], float32\[4, 5\]\): shapes do not broadcast/);
  });

  it('a dtype mismatch fails at build time naming the op and dtypes', () => {
    const g = new Graph('bad');
    const a = g.input('a', 'float32', [3]);
    const b = g.input('b', 'float64', [3]);
    expect(() => add(a, b)).toThrow(
      /add\(float32\[3\], float64\[3\]\): dtypes differ \(float32 vs float64\)/,
    );
    const i = g.input('i', 'int64', [3]);
    expect(() => rmsNorm(i, a, 1e-5)).toThrow(
      /rms_norm\(int64\[3\], float32\[3\]\): expected a floating-point tensor/,
    );
  });

  it('named dimensions are checked symbolically (batch*seq products, exact reshape)', () => {
    const g = new Graph('sym');
    const x = g.input('x', 'float32', ['batch', 'seq', 8]);
    expect(reshape(x, [-1, 8]).shape).toEqual(['batch*seq', 8]);
    expect(reshape(reshape(x, [-1, 8]), ['batch', 'seq', 2, 4]).shape).toEqual(['batch', 'seq', 2, 4]);
    expect(() => reshape(x, [-1, 3])).toThrow(/element counts do not divide/);
  });
});

describe('grad', () => {
  it('computes no gradient for frozen weights: only the requested input is differentiated', () => {
    const g = new Graph('scope');
    const w = g.weight('w', 'float32', [16, 8], new Float32Array(128));
    const x = g.input('x', 'float32', [4, 8]);
    const y = linear(x, w);
    const loss = reduceSum(mul(y, y));
    const before = g.nodes.length;
    const [dx] = grad(loss, [x]);
    const added = g.nodes.slice(before);
    // The backward has one matmul (dX = G·W); a weight gradient would need a second (Gᵀ·X).
    expect(added.filter((n) => n.op.type === 'matmul')).toHaveLength(1);
    expect(dx!.shape).toEqual([4, 8]);
  });

  it('accumulates fan-out: d/dx of x·x + x is 2x + 1', async () => {
    const g = new Graph('fanout');
    const x = g.input('x', 'float32', [3]);
    const loss = reduceSum(add(mul(x, x), x));
    const [dx] = grad(loss, [x]);
    const s = new Session(g, { inputs: [x], outputs: { dx: dx! } });
    const out = await s.run({ x: Float32Array.from([1, 2, -3]) });
    expect(Array.from(out.dx!.data as Float32Array)).toEqual([3, 5, -5]);
    await s.release();
  });

  it('returns zeros for inputs that do not influence the loss', async () => {
    const g = new Graph('unused');
    const x = g.input('x', 'float32', [2]);
    const u = g.input('u', 'float32', [2]);
    const [du] = grad(reduceSum(mul(x, x)), [u]);
    const s = new Session(g, { inputs: [x, u], outputs: { du: du! } });
    expect(
      Array.from(
        (await s.run({ x: Float32Array.of(1, 2), u: Float32Array.of(3, 4) })).du!.data as Float32Array,
      ),
    ).toEqual([0, 0]);
    await s.release();
  });
});

describe('ONNX emission and sessions', () => {
  function smallModel(weights: Float32Array) {
    const g = new Graph('linear-model');
    const w = g.weight('w', 'float32', [4, 4], weights);
    const x = g.input('x', 'float32', ['batch', 4]);
    return { g, x, y: linear(x, w) };
  }

  it('emits opset 21 with frozen weights as initializers and trainables as inputs', () => {
    const { g, x, y } = smallModel(new Float32Array(16).fill(1));
    const s = new Session(g, { inputs: [x], outputs: { y } });
    const model = onnxProto.onnx.ModelProto.decode(s.emit(new Map([['batch', 2]])).model);
    expect(Number(model.opsetImport.find((o) => o.domain === '')!.version)).toBe(21);
    expect(model.graph!.initializer!.map((t) => t.name)).toContain('w');
    expect(model.graph!.input!.map((t) => t.name)).toEqual(['x']);
  });

  it('emits no node whose output nothing reads: attention without its backward leaves no probabilities behind', () => {
    // ORT runs such a node all the same, last, and keeps its input alive until then: every layer's attention
    // probabilities stayed alive to the end of an inference or recomputed training run.
    const g = new Graph('attention-forward');
    const q = g.input('q', 'float32', [1, 4, 3, 2]);
    const k = g.input('k', 'float32', [1, 2, 3, 2]);
    const v = g.input('v', 'float32', [1, 2, 3, 2]);
    const s = new Session(g, { inputs: [q, k, v], outputs: { y: attention(q, k, v) } });
    const graph = onnxProto.onnx.ModelProto.decode(s.emit(new Map()).model).graph!;
    const read = new Set(graph.node!.flatMap((n) => n.input!));
    for (const o of graph.output!) read.add(o.name!);
    const unread = graph.node!.flatMap((n) => n.output!).filter((o) => !read.has(o));
    expect(unread).toEqual([]);
  });

  it('compiles one session per shape binding and reuses it', async () => {
    const { g, x, y } = smallModel(Float32Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 1 : 0)));
    const s = new Session(g, { inputs: [x], outputs: { y } });
    const r1 = await s.run({ x: { data: Float32Array.from([1, 2, 3, 4]), dims: [1, 4] } });
    const r2 = await s.run({ x: { data: Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), dims: [2, 4] } });
    const r3 = await s.run({ x: { data: Float32Array.from([4, 3, 2, 1]), dims: [1, 4] } });
    expect(Array.from(r1.y!.data as Float32Array)).toEqual([1, 2, 3, 4]);
    expect(r2.y!.dims).toEqual([2, 4]);
    expect(Array.from(r3.y!.data as Float32Array)).toEqual([4, 3, 2, 1]);
    expect((s as unknown as { compiled: Map<string, unknown> }).compiled.size).toBe(2);
    await s.release();
  });

  it('keeps at most maxCompiledShapes sessions, releasing the least recently run one', async () => {
    const { g, x, y } = smallModel(Float32Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 1 : 0)));
    const s = new Session(g, { inputs: [x], outputs: { y } }, { maxCompiledShapes: 2 });
    const compiled = (s as unknown as { compiled: Map<string, unknown> }).compiled;
    const feed = (rows: number) => ({
      x: { data: Float32Array.from({ length: 4 * rows }, (_, i) => i + 1), dims: [rows, 4] },
    });
    await s.run(feed(1));
    await s.run(feed(2));
    await s.run(feed(1)); // rows=1 is now the most recent: rows=2 goes first
    await s.run(feed(3));
    expect([...compiled.keys()]).toEqual(['batch=1', 'batch=3']);
    // An evicted shape compiles again and computes the same.
    const again = await s.run(feed(2));
    expect(Array.from(again.y!.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(compiled.size).toBe(2);
    await s.release();
  });

  it('rejects feeds whose shapes contradict the graph, naming input and dimension', async () => {
    const g = new Graph('feeds');
    const a = g.input('a', 'float32', ['n', 2]);
    const b = g.input('b', 'float32', ['n', 2]);
    const s = new Session(g, { inputs: [a, b], outputs: { c: add(a, b) } });
    await expect(
      s.run({
        a: { data: new Float32Array(4), dims: [2, 2] },
        b: { data: new Float32Array(6), dims: [3, 2] },
      }),
    ).rejects.toThrow(/dimension "n" is 2 elsewhere but 3 in input "b"/);
    await expect(s.run({ a: { data: new Float32Array(4), dims: [2, 2] } })).rejects.toThrow(
      /missing input "b"/,
    );
  });

  it('writes weights as external data when the model is large, and runs it', async () => {
    // 16x16 float32 = 1 KiB; the limit is lowered so that this counts as a large model.
    const g = new Graph('external');
    const w = g.weight(
      'w',
      'float32',
      [16, 16],
      Float32Array.from({ length: 256 }, (_, i) => i),
    );
    const x = g.input('x', 'float32', [1, 16]);
    const s = new Session(g, { inputs: [x], outputs: { y: linear(x, w) } }, { externalDataTotalBytes: 512 });
    const emitted = s.emit(new Map());
    expect(emitted.external?.parts.map((p) => p.tensorName)).toEqual(['w']);
    const model = onnxProto.onnx.ModelProto.decode(emitted.model);
    expect(model.graph!.initializer!.find((t) => t.name === 'w')!.dataLocation).toBe(1);
    const xv = new Float32Array(16);
    xv[1] = 1;
    const out = await s.run({ x: xv });
    expect(Array.from(out.y!.data as Float32Array)).toEqual(Array.from({ length: 16 }, (_, r) => r * 16 + 1));
    await s.release();
  });

  it('writes external weights once per session, however many shapes it compiles, and removes them on release', async () => {
    const g = new Graph('external-shapes');
    const w = g.weight(
      'w',
      'float32',
      [16, 16],
      Float32Array.from({ length: 256 }, (_, i) => i % 7),
    );
    const x = g.input('x', 'float32', ['n', 16]);
    const s = new Session(g, { inputs: [x], outputs: { y: linear(x, w) } }, { externalDataTotalBytes: 512 });
    for (const n of [1, 2, 3]) await s.run({ x: { data: new Float32Array(n * 16), dims: [n, 16] } });
    const dir = (s as unknown as { weightsDir: string }).weightsDir;
    expect(readdirSync(dir).sort()).toEqual([
      'external-shapes.weights',
      'model-0.onnx',
      'model-1.onnx',
      'model-2.onnx',
    ]);
    await s.release();
    expect(existsSync(dir)).toBe(false);
  });

  it('reads frozen weights straight from a byte range of a file (e.g. a safetensors shard)', async () => {
    const dir = join(tmpdir(), `moka-w-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'blob.bin');
    const w = Float32Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 2 : 0));
    writeFileSync(file, Buffer.concat([Buffer.alloc(8), Buffer.from(w.buffer)]));
    const g = new Graph('file-weight');
    const wt = g.weight('w', 'float32', [4, 4], { file, offset: 8, length: 64 });
    const x = g.input('x', 'float32', [1, 4]);
    // Inline (read into the model) and external (referenced in place through a link beside the model).
    for (const externalDataTotalBytes of [undefined, 16]) {
      const s = new Session(g, { inputs: [x], outputs: { y: linear(x, wt) } }, { externalDataTotalBytes });
      expect(s.emit(new Map()).external?.links.length ?? 0).toBe(externalDataTotalBytes ? 1 : 0);
      const out = await s.run({ x: Float32Array.from([1, 2, 3, 4]) });
      expect(Array.from(out.y!.data as Float32Array)).toEqual([2, 4, 6, 8]);
      await s.release();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('ORT errors at run time name the graph and the provider', async () => {
    const g = new Graph('faulty');
    const idx = g.input('idx', 'int64', [1]);
    const table = g.input('table', 'float32', [3, 2]);
    const s = new Session(g, { inputs: [table, idx], outputs: { y: gather(table, idx) } });
    await expect(s.run({ table: new Float32Array(6), idx: BigInt64Array.of(7n) })).rejects.toThrow(
      /graph "faulty" on cpu: .*gather#/,
    );
    await s.release();
  });

  it('asking for the CUDA provider when it is not installed says how to install it', async () => {
    const { g, x, y } = smallModel(new Float32Array(16));
    const s = new Session(g, { inputs: [x], outputs: { y } }, { provider: 'cuda' });
    const run = s.run({ x: { data: new Float32Array(4), dims: [1, 4] } });
    if (cudaProviderInstalled()) await expect(run).resolves.toBeDefined();
    else
      await expect(run).rejects.toThrow(
        /CUDA execution provider is not installed.*ONNXRUNTIME_NODE_INSTALL=cuda12/,
      );
    await s.release();
  });

  it('constant folding is off: the optimised graph holds each frozen weight once', async () => {
    const dir = join(tmpdir(), `moka-opt-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'optimized.onnx');
    const g = new Graph('no-dup');
    const w = g.weight(
      'w',
      'float32',
      [8, 4],
      Float32Array.from({ length: 32 }, (_, i) => i),
    );
    const x = g.input('x', 'float32', [2, 4]);
    const y = linear(x, w);
    const [dx] = grad(reduceSum(mul(y, y)), [x]);
    const s = new Session(g, { inputs: [x], outputs: { y, dx: dx! } }, { optimizedModelPath: path });
    await s.run({ x: new Float32Array(8) });
    const opt = onnxProto.onnx.ModelProto.decode(readFileSync(path));
    const big = opt.graph!.initializer!.filter(
      (t) => (t.dims ?? []).reduce((a: number, b) => a * Number(b), 1) >= 32,
    );
    expect(big).toHaveLength(1);
    await s.release();
    rmSync(dir, { recursive: true, force: true });
  });
});
