/**
 * Initial values of adapter tensors. Deterministic: each tensor's values depend only on the run seed and
 * the tensor's name, so adding a target does not change the others and a resumed run re-creates them exactly.
 */
import { fnv1a, mulberry32 } from '../engine/random.ts';

/**
 * PyTorch's default `kaiming_uniform_(a=√5)` for a weight with `fanIn` inputs (nn.Linear, PEFT's LoRA A):
 * U(−1/√fanIn, 1/√fanIn).
 */
export function kaimingUniform(seed: number, name: string, size: number, fanIn: number): Float32Array {
  const rand = mulberry32((seed ^ fnv1a(name)) >>> 0);
  const bound = 1 / Math.sqrt(fanIn);
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = (2 * rand() - 1) * bound;
  return out;
}

/** N(0, std²) values, for the optional `gateInit: "normal"`. */
export function smallNormal(seed: number, name: string, size: number, std = 0.02): Float32Array {
  const rand = mulberry32((seed ^ fnv1a(name)) >>> 0);
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    out[i] = std * r * Math.cos(2 * Math.PI * rand());
  }
  return out;
}
