// An adapter knows the base it was trained on (a content fingerprint in adapter_config.json): on another base of
// the same shapes every command that applies it warns, on one of other shapes it fails; a training run does not
// resume on another base; and every versioned file moka reads refuses versions it does not know.
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAdaptedModel } from '../../lib/adapters/adapted-model.ts';
import { defaultAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import { saveAdapter } from '../../lib/adapters/adapter-files.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { exportOnnx } from '../../lib/adapters/export-onnx.ts';
import { mergeCheckpoint } from '../../lib/adapters/merge-checkpoint.ts';
import { baseModelFingerprint } from '../../lib/model/base-identity.ts';
import { openCheckpoint } from '../../lib/model/checkpoint.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { quantizeCheckpoint, SUMMARY_FILE } from '../../lib/quant/quantize-checkpoint.ts';
import { runTraining } from '../../lib/train/run-training.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-base-identity-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const A = join(root, 'a'); // the base the adapter was trained on
const A16 = join(root, 'a-bf16'); // the same model stored in bfloat16
const A4 = join(root, 'a-nf4'); // the same model quantized
const B = join(root, 'b'); // same shapes, other weights
const C = join(root, 'c'); // other shapes
const ADAPTER = join(root, 'adapter');

beforeAll(async () => {
  await writeTinyCheckpoint({ dir: A, seed: 1 });
  await writeTinyCheckpoint({ dir: A16, seed: 1, dtype: 'bfloat16' });
  await writeTinyCheckpoint({ dir: B, seed: 2 });
  await writeTinyCheckpoint({ dir: C, seed: 1, intermediateSize: 96 });
  await quantizeCheckpoint({ modelDir: A, outDir: A4, format: 'nf4' });
  const ckpt = await openCheckpoint(A);
  const rt = createAdapterRuntime(ckpt.config, defaultAdapterConfig('lora'), { seed: 3 });
  const values = new Map(
    rt.tensors.map((t) => [t.name, Float32Array.from(t.init, (_, i) => 0.01 * (i % 7))]),
  );
  await saveAdapter(ADAPTER, rt, values, { baseModel: A, baseFingerprint: await baseModelFingerprint(ckpt) });
  await ckpt.close();
});

async function warningsOf(base: string): Promise<string[]> {
  const warnings: string[] = [];
  const model = await loadAdaptedModel(base, { adapter: ADAPTER, warn: (m) => warnings.push(m) });
  await model.close();
  return warnings;
}

describe('the base an adapter was trained on', () => {
  it('is recorded as a content fingerprint that survives the storage dtype and 4-bit quantization', async () => {
    const recorded = JSON.parse(readFileSync(join(ADAPTER, 'adapter_config.json'), 'utf8'));
    expect(recorded.base_model_fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(await warningsOf(A)).toEqual([]);
    expect(await warningsOf(A16)).toEqual([]);
    expect(await warningsOf(A4)).toEqual([]);
  });

  it('another base of the same shapes: generate/score, merge and export-onnx load it with a warning', async () => {
    const expected =
      /^.*adapter was trained on another base model \(.*\/a\) of the same shape: .*\/b has other weights/;
    expect(await warningsOf(B)).toEqual([expect.stringMatching(expected)]);
    const merged: string[] = [];
    await mergeCheckpoint({
      model: B,
      adapter: ADAPTER,
      out: join(root, 'merged'),
      warn: (m) => merged.push(m),
    });
    expect(merged).toEqual([expect.stringMatching(expected)]);
    const exported: string[] = [];
    await exportOnnx({
      model: B,
      adapter: ADAPTER,
      out: join(root, 'b.onnx'),
      seq: 8,
      warn: (m) => exported.push(m),
    });
    expect(exported).toEqual([expect.stringMatching(expected)]);
  });

  it('a base of other shapes is refused, naming each differing size', async () => {
    await expect(loadAdaptedModel(C, { adapter: ADAPTER })).rejects.toThrow(
      /adapter was trained on a base model of another shape \(intermediate_size 128, this model 96\)\. Use the adapter with the base model it was trained on \(.*\/a\)/,
    );
  });

  it('a training run does not resume on a base with the same shapes but other weights', async () => {
    const data = join(root, 'data.jsonl');
    writeFileSync(data, '{"instruction": "say hi", "output": "hi there"}\n'.repeat(6));
    const run = (modelDir: string) =>
      runTraining({
        modelDir,
        train: [data],
        outputDir: join(root, 'run'),
        training: parseTrainConfig({ maxSteps: 1, evalRecords: 1, evalEvery: 0, promptTemplate: 'plain' }),
        adapter: defaultAdapterConfig('lora'),
        progress: 'none',
        handleSignals: false,
        intraOpThreads: 1,
      });
    await run(A);
    await expect(run(B)).rejects.toThrow(
      /belongs to a different run[\s\S]*extra\.model\.fingerprint: "[0-9a-f]/,
    );
    // Versioned too: a checkpoint of an unknown trainer-state version is refused as such (not as another run).
    const state = join(root, 'run', 'checkpoints', 'step-1', 'trainer-state.json');
    writeFileSync(state, JSON.stringify({ ...JSON.parse(readFileSync(state, 'utf8')), formatVersion: 99 }));
    await expect(run(A)).rejects.toThrow(/step-1: checkpoint format 99, this moka reads 1/);
  });
});

describe('versioned files refuse versions they do not know', () => {
  it('adapter_config.json', async () => {
    const dir = join(root, 'adapter-v2');
    rmSync(dir, { recursive: true, force: true });
    const cfg = JSON.parse(readFileSync(join(ADAPTER, 'adapter_config.json'), 'utf8'));
    cpSync(ADAPTER, dir, { recursive: true });
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, version: 2 }));
    await expect(loadAdaptedModel(A, { adapter: dir })).rejects.toThrow(
      /adapter-v2\/adapter_config\.json has format version 2; this moka reads version 1/,
    );
  });

  it('a quantize summary of an unknown version is not taken for a replaceable earlier output', async () => {
    const summaryPath = join(A4, SUMMARY_FILE);
    const summary = JSON.parse(readFileSync(summaryPath, 'utf8'));
    writeFileSync(summaryPath, JSON.stringify({ ...summary, version: 7 }));
    await expect(quantizeCheckpoint({ modelDir: A, outDir: A4, format: 'nf4' })).rejects.toThrow(
      /already holds a quantization summary of format version 7, which this moka does not know/,
    );
  });

  it('adapter weight errors name the file once', async () => {
    const dir = join(root, 'adapter-truncated');
    cpSync(ADAPTER, dir, { recursive: true });
    const weights = join(dir, 'adapter_model.safetensors');
    truncateSync(weights, 100);
    let message = '';
    await loadAdaptedModel(A, { adapter: dir }).catch((err: Error) => (message = err.message));
    expect(message.split(weights).length - 1).toBe(1);
    expect(message).toMatch(/adapter_model\.safetensors: the safetensors header claims/);
  });
});
