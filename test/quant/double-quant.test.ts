// Double quantization: bnb's dynamic 8-bit table (bit for bit), its nearest-code search, and the absmax
// compression/restoration of NF4 blocks. Golden values come from bnb's published table (code.h / mistral.rs dump).
import { describe, expect, it } from 'vitest';
import { NESTED_BLOCK_SIZE, doubleQuantizeAbsmax, restoreAbsmax } from '../../lib/quant/double-quant.ts';
import { createDynamicMap, dynamicCode, fmaFloat32, linspaceFloat32 } from '../../lib/quant/dynamic-map.ts';
import { dequantizeNf4, quantizeNf4 } from '../../lib/quant/nf4.ts';
import { reconstructionError } from '../../lib/quant/reconstruction-error.ts';
import { fillNormal, mulberry32 } from '../../lib/engine/random.ts';

/** Entries 0..126 (the negative half) of create_dynamic_map(signed=True, 7, 8) as bnb's torch build produces it. */
const BNB_DYNAMIC_NEGATIVE = [
  -0.992968738079071, -0.9789062738418579, -0.96484375, -0.9507812261581421, -0.936718761920929,
  -0.922656238079071, -0.9085937738418579, -0.89453125, -0.8804687261581421, -0.866406261920929,
  -0.852343738079071, -0.8382812738418579, -0.82421875, -0.8101562261581421, -0.796093761920929,
  -0.782031238079071, -0.7679687738418579, -0.75390625, -0.7398437261581421, -0.725781261920929,
  -0.7117187976837158, -0.6976562738418579, -0.68359375, -0.6695312261581421, -0.655468761920929,
  -0.6414062976837158, -0.6273437738418579, -0.61328125, -0.5992187261581421, -0.585156261920929,
  -0.5710937976837158, -0.5570312738418579, -0.54296875, -0.5289062261581421, -0.5148437023162842,
  -0.500781238079071, -0.48671871423721313, -0.47265625, -0.4585937261581421, -0.44453126192092896,
  -0.43046873807907104, -0.4164062440395355, -0.40234375, -0.3882812261581421, -0.37421876192092896,
  -0.36015623807907104, -0.3460937440395355, -0.33203125, -0.3179687261581421, -0.30390626192092896,
  -0.28984373807907104, -0.2757812738418579, -0.26171875, -0.24765624105930328, -0.23359374701976776,
  -0.21953125298023224, -0.20546874403953552, -0.19140625, -0.17734375596046448, -0.16328124701976776,
  -0.14921875298023224, -0.13515624403953552, -0.12109375, -0.10703125596046448, -0.09859374910593033,
  -0.09578125923871994, -0.09296875447034836, -0.09015624970197678, -0.08734375238418579,
  -0.08453124761581421, -0.08171875774860382, -0.07890625298023224, -0.07609374821186066,
  -0.07328125089406967, -0.07046874612569809, -0.0676562562584877, -0.06484375149011612,
  -0.062031250447034836, -0.05921875312924385, -0.05640624836087227, -0.053593751043081284, -0.05078125,
  -0.047968748956918716, -0.04515625163912773, -0.04234374687075615, -0.039531249552965164,
  -0.03671875223517418, -0.033906251192092896, -0.031093750149011612, -0.028281250968575478,
  -0.025468749925494194, -0.02265625074505806, -0.019843751564621925, -0.017031250521540642,
  -0.014218750409781933, -0.011406250298023224, -0.009718749672174454, -0.009156249463558197,
  -0.008593750186264515, -0.008031249977648258, -0.0074687497690320015, -0.006906250026077032,
  -0.006343749817460775, -0.005781250074505806, -0.0052187503315508366, -0.0046562496572732925,
  -0.004093749914318323, -0.0035312497057020664, -0.002968749962747097, -0.002406249986961484,
  -0.001843750011175871, -0.001281249918974936, -0.0009437500848434865, -0.0008312499849125743,
  -0.0007187500596046448, -0.0006062500760890543, -0.000493750034365803, -0.0003812500217463821,
  -0.0002687500382307917, -0.00015625001105945557, -8.874999912222847e-5, -6.625000241911039e-5,
  -4.374999844003469e-5, -2.1249998098937795e-5, -7.749999895168003e-6, -3.250000190746505e-6,
  -5.500000384017767e-7,
];

describe('create_dynamic_map', () => {
  const map = createDynamicMap();

  it("reproduces bnb's signed 8-bit table bit for bit: negative half, 0, mirrored positive half, 1.0", () => {
    expect(map).toHaveLength(256);
    const expected = [...BNB_DYNAMIC_NEGATIVE, 0, ...BNB_DYNAMIC_NEGATIVE.map((v) => -v).reverse(), 1].map(
      Math.fround,
    );
    expect(Array.from(map)).toEqual(expected);
  });

  it('matches the documented anchors (quantization-formats.md §2)', () => {
    expect(map[0]).toBeCloseTo(-0.99296874, 7);
    expect(map[127]).toBe(0);
    expect(map[128]).toBeCloseTo(5.5e-7, 12);
    expect(map[254]).toBeCloseTo(0.99296874, 7);
    expect(map[255]).toBe(1);
    for (let i = 1; i < 256; i++) expect(map[i]!).toBeGreaterThan(map[i - 1]!);
  });

  it("needs torch's float32 fused-multiply-add linspace: exact arithmetic would miss entry 20", () => {
    // (0.1 + 0.9·43.5/64) in exact arithmetic rounds to …738; bnb's table holds …7976.
    expect(map[20]).toBe(Math.fround(-0.7117187976837158));
    expect(Math.fround(0.1 + (0.9 * 87) / 128)).not.toBe(Math.fround(0.7117187976837158));
    expect(Array.from(linspaceFloat32(0.1, 1, 2))).toEqual([Math.fround(0.1), 1]);
  });

  it('fmaFloat32 rounds once, including when the float64 sum lands on a float32 midpoint', () => {
    expect(fmaFloat32(3, 0.5, 1)).toBe(2.5);
    // 1 + 2^-24 is a float32 midpoint (ties to even → 1); a tiny product above it must round up instead.
    expect(fmaFloat32(2 ** -24, 1, 1)).toBe(1);
    expect(fmaFloat32(2 ** -24 + 2 ** -60, 1, 1)).toBe(Math.fround(1 + 2 ** -23));
  });
});

describe('dynamicCode (bnb CUDA dQuantize)', () => {
  const map = createDynamicMap();

  it('maps every table entry to its own index', () => {
    for (let i = 0; i < 256; i++) expect(dynamicCode(map, map[i]!)).toBe(i);
  });

  it('picks the nearest entry for values between entries and clamps outside [-1, 1]', () => {
    const rand = mulberry32(9);
    for (let t = 0; t < 2000; t++) {
      const x = Math.fround(rand() * 2 - 1);
      const c = dynamicCode(map, x);
      let best = 0;
      for (let i = 1; i < 256; i++) if (Math.abs(x - map[i]!) < Math.abs(x - map[best]!)) best = i;
      expect(Math.abs(x - map[c]!)).toBeLessThanOrEqual(Math.abs(x - map[best]!) + 1e-7);
    }
    expect(dynamicCode(map, -1)).toBe(0);
    expect(dynamicCode(map, 2)).toBe(255);
  });
});

describe('double quantization of the absmax values', () => {
  it('uses blocks of 256 and a float32 mean offset', () => {
    expect(NESTED_BLOCK_SIZE).toBe(256);
    const absmax = Float32Array.from({ length: 600 }, (_, i) => 1 + (i % 7) / 10);
    const s = doubleQuantizeAbsmax(absmax);
    expect(s.codes).toHaveLength(600);
    expect(s.nestedAbsmax).toHaveLength(3);
    expect(s.nestedBlockSize).toBe(256);
    const mean = absmax.reduce((a, b) => a + b, 0) / absmax.length;
    expect(s.offset).toBe(Math.fround(mean));
    expect(Array.from(s.nestedQuantMap)).toEqual(Array.from(createDynamicMap()));
  });

  it('restores a hand-computed example: absmax [1, 3] → offset 2, codes [0, 255]', () => {
    const s = doubleQuantizeAbsmax(Float32Array.from([1, 3]));
    expect(s.offset).toBe(2);
    expect(Array.from(s.nestedAbsmax)).toEqual([1]);
    expect(Array.from(s.codes)).toEqual([0, 255]);
    // map[0] · 1 + 2 = 2 − 0.99296875; map[255] · 1 + 2 = 3.
    expect(Array.from(restoreAbsmax(s))).toEqual([Math.fround(2 - 0.992968738079071), 3]);
  });

  it('restores the absmax of Gaussian weights within 1% and costs almost no extra NF4 error', () => {
    const values = fillNormal(new Float32Array(64 * 1024), mulberry32(4));
    const plain = quantizeNf4(values, [64, 1024]);
    const dq = quantizeNf4(values, [64, 1024], { doubleQuant: true });
    for (let i = 0; i < plain.absmax.length; i++) {
      expect(Math.abs(dq.absmax[i]! - plain.absmax[i]!) / plain.absmax[i]!).toBeLessThan(0.01);
    }
    // Same codes (computed from the exact absmax); only the scales differ.
    expect(dq.packed).toEqual(plain.packed);
    const e0 = reconstructionError(values, plain).relativeFrobenius;
    const e1 = reconstructionError(values, dq).relativeFrobenius;
    expect(e1 - e0).toBeLessThan(1e-3);
    expect(dequantizeNf4(dq)).toHaveLength(values.length);
    // 8 bits per 64 weights plus one float32 per 256 blocks: ≈ 0.127 bit/weight instead of 0.5.
    const bits =
      (dq.doubleQuant!.codes.length * 8 + dq.doubleQuant!.nestedAbsmax.length * 32) / values.length;
    expect(bits).toBeCloseTo(8 / 64 + 32 / (64 * 256), 6);
  });

  it('survives identical absmax values (centred values all zero, nested absmax 0)', () => {
    const s = doubleQuantizeAbsmax(new Float32Array(300).fill(0.75));
    expect(Array.from(s.nestedAbsmax)).toEqual([0, 0]);
    expect(restoreAbsmax(s).every((v) => v === 0.75)).toBe(true);
  });
});
