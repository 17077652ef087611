/**
 * A base model's identity: a content fingerprint that tells two checkpoints apart even when their configs and
 * shapes agree (two fine-tunes of one architecture, two random inits), recorded in adapter_config.json and in a
 * training run's fingerprint, and compared whenever an adapter is applied or a run resumed.
 *
 * What it hashes (SHA-256), and why:
 * - the architecture as config.json defines it (the parsed LLaMA fields: sizes, heads, RoPE, norm epsilon, tied
 *   embeddings), not the raw file, whose bookkeeping fields (transformers_version, _name_or_path) change freely;
 * - the values of `model.norm.weight` and of the first and last rows of `model.embed_tokens.weight`, each rounded to
 *   bfloat16. These tensors differ between any two trained (or randomly initialised) models, cost a few KB to read
 *   at any model size, are never quantized (a 4-bit checkpoint keeps them as they were), and rounding to bfloat16
 *   makes a float32 and a bfloat16 copy of one model agree.
 * Not hashed: the storage dtype and the quantization. An adapter trained on the 4-bit base is routinely applied to,
 * or merged into, the 16-bit base it was quantized from (QLoRA); that is the same model.
 */
import { createHash } from 'node:crypto';
import type { Checkpoint } from './checkpoint.ts';
import { decodeFloat32, f32ToBf16Bits } from './dtype-convert.ts';

/** Bumped if what the fingerprint hashes changes, so old and new fingerprints are never compared as equal. */
const FINGERPRINT_SCHEME = 'moka-base-v1';

/** The base's content fingerprint (hex SHA-256); see the module comment for what it covers. */
export async function baseModelFingerprint(ckpt: Checkpoint): Promise<string> {
  const c = ckpt.config;
  const architecture = {
    vocabSize: c.vocabSize,
    hiddenSize: c.hiddenSize,
    intermediateSize: c.intermediateSize,
    numLayers: c.numLayers,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    rmsNormEps: c.rmsNormEps,
    ropeTheta: c.ropeTheta,
    ropeScaling: c.ropeScaling,
    tieWordEmbeddings: c.tieWordEmbeddings,
  };
  const h = createHash('sha256').update(`${FINGERPRINT_SCHEME}\n${JSON.stringify(architecture)}\n`);
  const embed = 'model.embed_tokens.weight';
  const rows = ckpt.info(embed).shape[0]!;
  const samples: [string, number, number][] = [
    ['model.norm.weight', 0, 1],
    [embed, 0, 1],
    [embed, rows - 1, rows],
  ];
  for (const [name, start, end] of samples) {
    const info = ckpt.info(name);
    const bytes = info.shape.length === 1 ? await ckpt.readRaw(name) : await ckpt.readRows(name, start, end);
    const bf16 = Uint16Array.from(decodeFloat32(info.dtype, bytes), (x) => f32ToBf16Bits(x));
    h.update(`${name}[${start}:${end}]`).update(new Uint8Array(bf16.buffer));
  }
  return h.digest('hex');
}
