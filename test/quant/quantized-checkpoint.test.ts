// Reading 4-bit checkpoints: which quantization_config blocks are accepted, and how a damaged quantized
// directory is reported; plus the atomic output directory's cleanup of crashed runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { openSafetensors, writeSafetensors, type SafetensorsTensor } from '../../lib/model/safetensors.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { openQuantizedCheckpoint, quantFormatOf } from '../../lib/quant/quantized-checkpoint.ts';
import { beginAtomicOutputDir } from '../../lib/quant/atomic-output-dir.ts';
import { isUserError } from '../../lib/errors.ts';

let root: string;
let quantized: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'moka-qckpt-'));
  await writeTinyCheckpoint({ dir: join(root, 'model'), seed: 6, numLayers: 1 });
  quantized = join(root, 'q');
  await quantizeCheckpoint({ modelDir: join(root, 'model'), outDir: quantized, format: 'nf4' });
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function rejects(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** A copy of the quantized model with its single safetensors file rewritten by `edit`. */
async function damagedCopy(
  name: string,
  edit: (ts: SafetensorsTensor[]) => SafetensorsTensor[],
): Promise<string> {
  const dir = join(root, name);
  await mkdir(dir);
  for (const f of await readdir(quantized)) {
    if (f !== 'model.safetensors') await writeFile(join(dir, f), await readFile(join(quantized, f)));
  }
  const st = await openSafetensors(join(quantized, 'model.safetensors'));
  const tensors: SafetensorsTensor[] = [];
  for (const n of st.names()) tensors.push({ ...st.info(n), data: await st.readRaw(n) });
  await st.close();
  await writeSafetensors(join(dir, 'model.safetensors'), edit(tensors));
  return dir;
}

describe('quantFormatOf', () => {
  it('accepts bnb NF4 and moka int4, returns null without quantization_config', () => {
    expect(quantFormatOf({}, 'c')).toBeNull();
    expect(
      quantFormatOf(
        {
          quantization_config: {
            quant_method: 'bitsandbytes',
            load_in_4bit: true,
            bnb_4bit_quant_type: 'nf4',
          },
        },
        'c',
      ),
    ).toBe('nf4');
    expect(quantFormatOf({ quantization_config: { quant_method: 'moka', quant_type: 'int4' } }, 'c')).toBe(
      'int4',
    );
  });

  it.each([
    [{ quant_method: 'bitsandbytes', load_in_8bit: true }, /8-bit model; moka reads 4-bit NF4 only/],
    [
      { quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_type: 'fp4' },
      /"fp4"; moka reads NF4 only/,
    ],
    [{ quant_method: 'gptq', bits: 4 }, /quantization method "gptq" is not supported/],
  ])('rejects %j', (qc, message) => {
    expect(() => quantFormatOf({ quantization_config: qc }, 'c')).toThrow(message);
  });
});

describe('openQuantizedCheckpoint on damaged directories', () => {
  const Q = 'model.layers.0.self_attn.q_proj.weight';

  it('names a missing companion tensor when the weight is read', async () => {
    const dir = await damagedCopy('no-absmax', (ts) => ts.filter((t) => t.name !== `${Q}.absmax`));
    const q = await openQuantizedCheckpoint(dir);
    try {
      const err = await rejects(q.readFloat32(Q));
      expect(isUserError(err)).toBe(true);
      expect(err.message).toMatch(/NF4 weight ".*q_proj\.weight": missing tensor ".*q_proj\.weight\.absmax"/);
    } finally {
      await q.close();
    }
  });

  it('rejects a quant state whose shape disagrees with config.json, at open', async () => {
    const dir = await damagedCopy('bad-shape', (ts) =>
      ts.map((t) => {
        if (!t.name.endsWith('bitsandbytes__nf4') || !t.name.startsWith(Q)) return t;
        const text = new TextDecoder().decode(t.data as Uint8Array).replace('[64, 64]', '[32, 128]');
        const data = new TextEncoder().encode(text);
        return { ...t, shape: [data.length], data };
      }),
    );
    const err = await rejects(openQuantizedCheckpoint(dir));
    expect(isUserError(err)).toBe(true);
    expect(err.message).toMatch(
      /"model\.layers\.0\.self_attn\.q_proj\.weight" has shape \[32,128\], but config\.json implies \[64,64\]/,
    );
  });

  it('rejects a model whose config declares quantization but whose tensors carry none', async () => {
    const dir = join(root, 'mislabelled');
    await writeTinyCheckpoint({ dir, seed: 7, numLayers: 1 });
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    config.quantization_config = { quant_method: 'moka', quant_type: 'int4' };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    const err = await rejects(openQuantizedCheckpoint(dir));
    expect(err.message).toMatch(
      /declares int4 quantization but no tensor has a "….quant_state.moka__int4" quant state/,
    );
  });
});

describe('beginAtomicOutputDir', () => {
  it('removes temporary directories of runs whose process is gone, and keeps live ones', async () => {
    const out = join(root, 'atomic');
    const dead = `${out}.tmp-999999999`;
    const live = `${out}.tmp-${process.ppid}`;
    await mkdir(dead);
    await mkdir(live);
    const o = await beginAtomicOutputDir(out);
    await writeFile(join(o.tmpDir, 'x'), 'y');
    await o.commit();
    const left = (await readdir(root)).filter((e) => e.startsWith('atomic'));
    expect(left.sort()).toEqual(['atomic', `atomic.tmp-${process.ppid}`]);
    expect(await readFile(join(out, 'x'), 'utf8')).toBe('y');
  });
});
