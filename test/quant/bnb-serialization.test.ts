// The transformers/bitsandbytes 4-bit checkpoint layout of one NF4 weight: tensor names, dtypes, shapes, the
// quant-state JSON text (byte for byte what Python's json.dumps writes), and the round trip back.
import { describe, expect, it } from 'vitest';
import {
  BNB_NF4_STATE_SUFFIX,
  bnbQuantizationConfig,
  isBnbCompanionTensor,
  nf4FromTensors,
  nf4QuantStateJson,
  nf4ToTensors,
} from '../../lib/quant/bnb-serialization.ts';
import { dequantizeNf4, quantizeNf4 } from '../../lib/quant/nf4.ts';
import { pythonFloatRepr, pythonJsonDumps, PyFloat } from '../../lib/quant/python-json.ts';
import { tensorSourceOf, type QuantTensor } from '../../lib/quant/quant-tensor.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';
import { isUserError } from '../../lib/errors.ts';

const W = 'model.layers.0.self_attn.q_proj.weight';

function weights(rows: number, cols: number, seed = 1): Float32Array {
  return fillNormal(new Float32Array(rows * cols), mulberry32(seed), 0.02);
}

describe("Python's float repr and json.dumps", () => {
  it.each([
    [0, '0.0'],
    [2, '2.0'],
    [1234.5, '1234.5'],
    [0.0001, '0.0001'],
    [0.00001, '1e-05'],
    [0.000015, '1.5e-05'],
    [Math.fround(0.1), '0.10000000149011612'],
    [1e15, '1000000000000000.0'],
    [1e16, '1e+16'],
    [123456789012345680, '1.2345678901234568e+17'],
    [-0.5, '-0.5'],
  ])('repr(%d) = %s', (x, text) => {
    expect(pythonFloatRepr(x)).toBe(text);
  });

  it('uses ", " and ": " separators and keeps key order', () => {
    expect(
      pythonJsonDumps([
        ['a', 'x'],
        ['b', 64],
        ['c', [2, 3]],
        ['d', new PyFloat(2)],
        ['e', true],
      ]),
    ).toBe('{"a": "x", "b": 64, "c": [2, 3], "d": 2.0, "e": true}');
  });
});

describe('nf4ToTensors', () => {
  it('writes the plain layout: packed U8 [n/2, 1], F32 absmax, F32 quant_map, quant_state JSON', () => {
    const w = quantizeNf4(weights(32, 128), [32, 128], { dtype: 'BF16' });
    const tensors = nf4ToTensors(W, w);
    expect(tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      [W, 'U8', [2048, 1]],
      [`${W}.absmax`, 'F32', [64]],
      [`${W}.quant_map`, 'F32', [16]],
      [`${W}${BNB_NF4_STATE_SUFFIX}`, 'U8', [tensors[3]!.bytes.length]],
    ]);
    expect(W + BNB_NF4_STATE_SUFFIX).toBe(`${W}.quant_state.bitsandbytes__nf4`);
    const json = new TextDecoder().decode(tensors[3]!.bytes);
    expect(json).toBe('{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32, 128]}');
    for (const t of tensors)
      expect(t.bytes.length).toBe(t.shape.reduce((a, d) => a * d, 1) * (t.dtype === 'F32' ? 4 : 1));
  });

  it('writes the double-quant layout: U8 absmax codes, nested_absmax, nested_quant_map, nested_* state keys', () => {
    const w = quantizeNf4(weights(64, 320), [64, 320], { doubleQuant: true, dtype: 'F16' });
    const tensors = nf4ToTensors(W, w);
    expect(tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      [W, 'U8', [10240, 1]],
      [`${W}.absmax`, 'U8', [320]],
      [`${W}.quant_map`, 'F32', [16]],
      [`${W}.nested_absmax`, 'F32', [2]],
      [`${W}.nested_quant_map`, 'F32', [256]],
      [`${W}${BNB_NF4_STATE_SUFFIX}`, 'U8', [tensors[5]!.bytes.length]],
    ]);
    const json = new TextDecoder().decode(tensors[5]!.bytes);
    expect(json).toBe(
      '{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [64, 320], "nested_blocksize": 256, ' +
        `"nested_dtype": "float32", "nested_offset": ${pythonFloatRepr(w.doubleQuant!.offset)}}`,
    );
    expect(JSON.parse(json).nested_offset).toBe(w.doubleQuant!.offset);
    expect(nf4QuantStateJson(w)).toBe(json);
    expect(tensors.slice(1).every((t) => isBnbCompanionTensor(t.name))).toBe(true);
    expect(isBnbCompanionTensor(W)).toBe(false);
  });

  it('round-trips through nf4FromTensors, with and without double quant', async () => {
    for (const doubleQuant of [false, true]) {
      const w = quantizeNf4(weights(16, 200, 3), [16, 200], { doubleQuant, blockSize: 128 });
      const back = await nf4FromTensors(W, tensorSourceOf(nf4ToTensors(W, w)), 'test');
      expect(back.shape).toEqual([16, 200]);
      expect(back.blockSize).toBe(128);
      expect(back.packed).toEqual(w.packed);
      expect(back.absmax).toEqual(w.absmax);
      expect(back.doubleQuant?.codes).toEqual(w.doubleQuant?.codes);
      expect(dequantizeNf4(back)).toEqual(dequantizeNf4(w));
    }
  });
});

describe('nf4FromTensors on bad checkpoints', () => {
  const good = nf4ToTensors(W, quantizeNf4(weights(8, 64), [8, 64], { doubleQuant: true }));
  const mutate = (f: (ts: QuantTensor[]) => QuantTensor[]) => tensorSourceOf(f(good.map((t) => ({ ...t }))));

  async function failure(source: ReturnType<typeof tensorSourceOf>): Promise<Error> {
    try {
      await nf4FromTensors(W, source, 'ckpt');
    } catch (err) {
      return err as Error;
    }
    throw new Error('expected a failure');
  }

  it('names a missing companion tensor', async () => {
    const err = await failure(mutate((ts) => ts.filter((t) => !t.name.endsWith('.nested_absmax'))));
    expect(isUserError(err)).toBe(true);
    expect(err.message).toMatch(/ckpt: NF4 weight ".*q_proj.weight": missing tensor ".*nested_absmax"/);
  });

  it('rejects codes whose size does not match the recorded shape', async () => {
    const err = await failure(
      mutate((ts) =>
        ts.map((t) => (t.name === W ? { ...t, bytes: t.bytes.subarray(1), shape: [255, 1] } : t)),
      ),
    );
    expect(err.message).toMatch(/255 bytes of codes, but shape \[8,64\] needs 256/);
  });

  it('rejects a corrupt quant state and FP4 weights with a hint', async () => {
    const err = await failure(
      mutate((ts) =>
        ts.map((t) => (t.name.endsWith('nf4') ? { ...t, bytes: new Uint8Array([123, 34]) } : t)),
      ),
    );
    expect(err.message).toMatch(/quant_state tensor is not UTF-8 JSON/);
    const fp4 = await failure(
      mutate((ts) => [
        ...ts,
        { name: `${W}.quant_state.bitsandbytes__fp4`, dtype: 'U8', shape: [1], bytes: new Uint8Array(1) },
      ]),
    );
    expect(fp4.message).toMatch(/FP4-quantized; moka reads NF4 only/);
  });

  it('accepts only float32, float16 and bfloat16 as the quant state dtype', async () => {
    const withDtype = (dtype: string) =>
      mutate((ts) =>
        ts.map((t) => {
          if (!t.name.endsWith('nf4')) return t;
          const state = JSON.parse(new TextDecoder().decode(t.bytes)) as Record<string, unknown>;
          const bytes = new TextEncoder().encode(JSON.stringify({ ...state, dtype }));
          return { ...t, bytes, shape: [bytes.length] };
        }),
      );
    expect((await nf4FromTensors(W, withDtype('float16'), 'ckpt')).dtype).toBe('F16');
    // Not a lookup in a plain object: "constructor" is no dtype.
    for (const bad of ['float64', 'fp16', 'constructor']) {
      expect((await failure(withDtype(bad))).message).toMatch(
        /quant_state\.dtype ".*" is not float32, float16 or bfloat16/,
      );
    }
  });
});

describe('bnbQuantizationConfig', () => {
  it('is the BitsAndBytesConfig.to_dict() block transformers expects for NF4 + double quant', () => {
    const c = bnbQuantizationConfig({ doubleQuant: true, computeDtype: 'BF16', skipModules: null });
    expect(c).toEqual({
      _load_in_4bit: true,
      _load_in_8bit: false,
      bnb_4bit_compute_dtype: 'bfloat16',
      bnb_4bit_quant_storage: 'uint8',
      bnb_4bit_quant_type: 'nf4',
      bnb_4bit_use_double_quant: true,
      llm_int8_enable_fp32_cpu_offload: false,
      llm_int8_has_fp16_weight: false,
      llm_int8_skip_modules: null,
      llm_int8_threshold: 6.0,
      load_in_4bit: true,
      load_in_8bit: false,
      quant_method: 'bitsandbytes',
    });
    expect(Object.keys(c)).toEqual([...Object.keys(c)].sort());
  });
});
