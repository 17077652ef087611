/**
 * `moka export-onnx` and `moka merge` as a user runs them: the exported model, loaded by a bare ONNX Runtime
 * session, gives the logits moka computes (rel < 1e-4), for a 4-bit base with an adapter kept unmerged, and
 * merged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { openFrozenBase } from '../../lib/quant/frozen-base.ts';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { saveAdapter } from '../../lib/adapters/adapter-files.ts';
import { loadAdaptedModel } from '../../lib/adapters/adapted-model.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import { runMoka } from '../helpers/run-moka.ts';

let root: string;
const SEQ = 16;
const TOKENS = [507, 12, 200, 31, 47, 5, 90];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'moka-export-'));
  await writeTinyCheckpoint({
    dir: join(root, 'tiny'),
    seed: 4,
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 2,
  });
  await quantizeCheckpoint({
    modelDir: join(root, 'tiny'),
    outDir: join(root, 'q'),
    format: 'int4',
    blockSize: 32,
  });
  const base = await openFrozenBase(join(root, 'q'));
  const rt = createAdapterRuntime(base.config, parseAdapterConfig({ type: 'moka', plan: { count: 2 } }), {
    seed: 2,
  });
  const rand = seededRandom(8);
  const values = new Map(
    rt.tensors.map((t) => [t.name, Float32Array.from(randomNormal(t.init.length, rand, 0.05))]),
  );
  await saveAdapter(join(root, 'adapter'), rt, values);
  await base.close();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function runExported(path: string): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(path, { executionProviders: ['cpu'] });
  const ids = new BigInt64Array(SEQ);
  const mask = new BigInt64Array(SEQ);
  TOKENS.forEach((t, i) => {
    ids[i] = BigInt(t);
    mask[i] = 1n;
  });
  const out = await s.run({
    input_ids: new ort.Tensor('int64', ids, [1, SEQ]),
    attention_mask: new ort.Tensor('int64', mask, [1, SEQ]),
    position_ids: new ort.Tensor(
      'int64',
      BigInt64Array.from({ length: SEQ }, (_, i) => BigInt(i)),
      [SEQ],
    ),
  });
  await s.release();
  return out.logits!.data as Float32Array;
}

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

describe('moka export-onnx', () => {
  it.each([
    ['unmerged', []],
    ['merged', ['--merged']],
  ] as const)(
    'a 4-bit base with a MoKA adapter, %s, runs in plain ONNX Runtime with moka’s logits (rel < 1e-4)',
    async (label, flags) => {
      const out = join(root, `${label}.onnx`);
      const r = runMoka([
        'export-onnx',
        '--model',
        join(root, 'q'),
        '--adapter',
        join(root, 'adapter'),
        ...flags,
        '--out',
        out,
        '--seq',
        String(SEQ),
      ]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(existsSync(out)).toBe(true);
      const exported = await runExported(out);
      const model = await loadAdaptedModel(join(root, 'q'), { adapter: join(root, 'adapter') });
      const [expected] = await model.logits([TOKENS]);
      await model.close();
      expect(relErr(exported.subarray(0, expected!.length), expected!)).toBeLessThan(1e-4);
    },
  );

  it('refuses --merged without an adapter and a non-.onnx output', () => {
    expect(
      runMoka(['export-onnx', '--model', join(root, 'q'), '--merged', '--out', join(root, 'x.onnx')]).stderr,
    ).toMatch(/--merged needs --adapter/);
    expect(runMoka(['export-onnx', '--model', join(root, 'q'), '--out', join(root, 'x.bin')]).stderr).toMatch(
      /must name a \.onnx file/,
    );
  });
});

describe('moka merge', () => {
  it('writes a loadable checkpoint and refuses to overwrite a non-empty directory', () => {
    const out = join(root, 'merged');
    const args = [
      'merge',
      '--model',
      join(root, 'q'),
      '--adapter',
      join(root, 'adapter'),
      '--out',
      out,
      '--dtype',
      'bf16',
    ];
    const first = runMoka(args);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/merged \d+ projections/);
    expect(existsSync(join(out, 'config.json'))).toBe(true);
    const again = runMoka(args);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already holds .*; choose a new or empty --out directory, or pass --force/);
    // Merging into the model's own directory is refused before anything is touched.
    const self = runMoka([
      'merge',
      '--model',
      join(root, 'q'),
      '--adapter',
      join(root, 'adapter'),
      '--out',
      join(root, 'q'),
      '--force',
    ]);
    expect(self.stderr).toMatch(/--out is the model directory itself/);
    expect(existsSync(join(root, 'q', 'config.json'))).toBe(true);
    // A failed merge leaves no output directory behind.
    const failed = runMoka([
      'merge',
      '--model',
      join(root, 'q'),
      '--adapter',
      join(root, 'nope'),
      '--out',
      join(root, 'never'),
    ]);
    expect(failed.code).toBe(1);
    expect(existsSync(join(root, 'never'))).toBe(false);
    const score = runMoka(['score', '--model', out, '--context', 'The cat', '--choice', ' sat']);
    expect(score.code).toBe(0);
    expect(JSON.parse(score.stdout).choices[0].tokens).toBeGreaterThan(0);
  });
});
