/**
 * bitsandbytes' 8-bit "dynamic tree" code table (`create_dynamic_map`) and its nearest-code search
 * (`dQuantize` of csrc/kernels.cu), used for the second level of NF4 double quantization.
 *
 * The table is rebuilt here bit for bit. bnb computes it with float32 torch ops, and the published table
 * (e.g. index 20 = -0.7117187976837158, not the -0.711718738… that exact arithmetic gives) matches
 * `torch.linspace` evaluated as a fused multiply-add per point: start + step·i (first half) and
 * end − step·(steps−1−i) (second half), each rounded once to float32. We emulate that exactly.
 * When reading a checkpoint, use its stored `nested_quant_map` instead (what the writer actually used).
 */

const f32 = Math.fround;
const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** The float32 neighbour of a finite float32 `r` in the direction of `toward`. */
function nextFloat32(r: number, toward: number): number {
  if (r === 0) return toward > 0 ? 1.401298464324817e-45 : -1.401298464324817e-45;
  scratch[0] = r;
  // Moving away from zero increments the magnitude bits; towards zero decrements them.
  scratchBits[0] = scratchBits[0]! + (toward > r === r > 0 ? 1 : -1);
  return scratch[0]!;
}

/**
 * float32 fma: a·b + c rounded once to float32. a·b of two float32 values is exact in float64; the float64 sum
 * can then only mislead float32 rounding when it lands exactly on a float32 midpoint, which the exact
 * residual of the sum (TwoSum) resolves.
 */
export function fmaFloat32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bp = s - c;
  const err = p - bp + (c - (s - bp));
  const r = f32(s);
  if (r === s || err === 0) return r;
  const other = nextFloat32(r, s);
  if (Math.abs(s - r) !== Math.abs(other - s)) return r;
  // s is a float32 midpoint but the exact value lies to one side of it.
  return err > 0 === other > r ? other : r;
}

/** torch.linspace(start, end, steps) in float32, as the fused-multiply-add kernel evaluates it. */
export function linspaceFloat32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < half ? fmaFloat32(step, i, s) : fmaFloat32(-step, steps - 1 - i, e);
  }
  return out;
}

/**
 * bnb `create_dynamic_map(signed, max_exponent_bits, total_bits)`: for each exponent i, the interval means of
 * linspace(0.1, 1, fraction_items) scaled by 10^(i − (max_exponent_bits − 1)), both signs when signed, plus 0
 * and 1.0, zero-padded to 256 and sorted. Defaults give the signed 8-bit table of double quantization:
 * index 0 = −0.99296875, 127 = 0, 254 = 0.99296875, 255 = 1.0.
 */
export function createDynamicMap(signed = true, maxExponentBits = 7, totalBits = 8): Float32Array {
  const data: number[] = [];
  const nonSignBits = totalBits - 1;
  const additionalItems = 2 ** (nonSignBits - maxExponentBits) - 1;
  const pushMeans = (boundaries: Float32Array, scale: number) => {
    for (let j = 0; j + 1 < boundaries.length; j++) {
      const mean = f32(f32(boundaries[j]! + boundaries[j + 1]!) / 2);
      // Python float × float32 tensor: torch casts the scalar to float32 and multiplies in float32.
      const v = f32(f32(scale) * mean);
      data.push(v);
      if (signed) data.push(-v);
    }
  };
  let lastScale = 0;
  for (let i = 0; i < maxExponentBits; i++) {
    const fractionItems = signed
      ? 2 ** (i + nonSignBits - maxExponentBits) + 1
      : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    lastScale = 10 ** (-(maxExponentBits - 1) + i);
    pushMeans(linspaceFloat32(0.1, 1, fractionItems), lastScale);
  }
  if (additionalItems > 0) pushMeans(linspaceFloat32(0.1, 1, additionalItems + 1), lastScale);
  data.push(0, 1.0);
  if (data.length > 256)
    throw new RangeError(`dynamic map with these parameters has ${data.length} > 256 entries`);
  while (data.length < 256) data.push(0);
  data.sort((a, b) => a - b);
  return Float32Array.from(data);
}

/** The default signed 8-bit dynamic table, built once. */
let defaultMap: Float32Array | null = null;
export function defaultDynamicMap(): Float32Array {
  defaultMap ??= createDynamicMap();
  return defaultMap.slice();
}

/**
 * Nearest entry of a sorted 256-entry table: bnb's CUDA `dQuantize<0>`, a 7-step binary search from index 127
 * followed by one float32 midpoint test against the neighbour on the side x lies. Ties go to the side the
 * search ended on (so not always to the lower index, unlike NF4's tree).
 */
export function dynamicCode(code: Float32Array, x: number): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1.0;
  let upper = 1.0;
  let val = code[pivot]!;
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot]!;
  }
  if (upperPivot === 255) upper = code[255]!;
  if (lowerPivot === 0) lower = code[0]!;
  if (x > val) {
    const midpoint = f32(f32(upper + val) * 0.5);
    return x > midpoint ? upperPivot : pivot;
  }
  const midpoint = f32(f32(lower + val) * 0.5);
  return x < midpoint ? lowerPivot : pivot;
}
