// The safetensors reader and writer: round trips for every dtype, the exact on-disk layout, header validation
// with clear messages, streaming (per-tensor) reads, and atomic writes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DTYPE_BYTES, numElements, type SafetensorsDtype } from '../../lib/model/dtype-convert.ts';
import {
  SafetensorsWriter,
  openSafetensors,
  writeSafetensors,
  type SafetensorsTensor,
} from '../../lib/model/safetensors.ts';
import { mulberry32 } from '../../lib/engine/random.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'moka-st-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function randomBytes(n: number, seed: number): Uint8Array {
  const rand = mulberry32(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
}

/** A file laid out by hand per the spec (independent of the writer): u64 LE length, JSON, data. */
async function handMade(
  name: string,
  header: unknown,
  data: Uint8Array,
  headerText?: string,
): Promise<string> {
  const json = Buffer.from(headerText ?? JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.byteLength));
  const path = join(dir, name);
  await writeFile(path, Buffer.concat([prefix, json, data]));
  return path;
}

const ALL_DTYPES = Object.keys(DTYPE_BYTES) as (keyof typeof DTYPE_BYTES)[];

describe('round trip', () => {
  it('every dtype, plus 0-rank and empty tensors, reads back byte for byte', async () => {
    const tensors: SafetensorsTensor[] = ALL_DTYPES.map((dtype, i) => ({
      name: `t.${dtype}`,
      dtype,
      shape: [2, 3],
      data: randomBytes(6 * DTYPE_BYTES[dtype], i + 1),
    }));
    tensors.push({ name: 'scalar', dtype: 'F32', shape: [], data: new Float32Array([7.5]) });
    tensors.push({ name: 'empty', dtype: 'BF16', shape: [0, 4], data: new Uint8Array(0) });
    const path = join(dir, 'all.safetensors');
    await writeSafetensors(path, tensors, { format: 'pt', note: 'x' });

    const f = await openSafetensors(path);
    try {
      expect(f.metadata).toEqual({ format: 'pt', note: 'x' });
      expect(f.names()).toEqual(
        tensors
          .map((t) => t.name)
          .filter((n) => n !== 'empty' && n !== 'scalar')
          .concat(['scalar', 'empty']),
      );
      for (const t of tensors) {
        const info = f.info(t.name);
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual(t.shape);
        const raw = await f.readRaw(t.name);
        expect(raw.byteLength).toBe(numElements(t.shape) * DTYPE_BYTES[t.dtype as keyof typeof DTYPE_BYTES]);
        expect(
          Buffer.from(raw).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
        ).toBe(true);
      }
      expect([...(await f.readFloat32('scalar'))]).toEqual([7.5]);
      expect((await f.readFloat32('empty')).length).toBe(0);
      await expect(f.readFloat32('t.I32')).rejects.toThrow(/t\.I32.*dtype I32.*only F32, F16, BF16 and F64/);
      await expect(f.readRaw('nope')).rejects.toThrow(/no tensor named "nope"/);
    } finally {
      await f.close();
    }
  });

  it('writes the layout of the spec: LE u64 length, space-padded JSON, contiguous data in order', async () => {
    const path = join(dir, 'layout.safetensors');
    await writeSafetensors(path, {
      a: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      b: { dtype: 'U8', shape: [3], data: new Uint8Array([9, 8, 7]) },
    });
    const bytes = await readFile(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    expect(header).toEqual({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'U8', shape: [3], data_offsets: [8, 11] },
    });
    expect(bytes.byteLength).toBe(8 + n + 11);
    expect([...bytes.subarray(8 + n + 8)]).toEqual([9, 8, 7]);
    expect(bytes.readFloatLE(8 + n + 4)).toBe(2);
  });

  it('reads a file laid out by hand (header with trailing spaces, tensors not in offset order)', async () => {
    const data = new Uint8Array(new Float32Array([1, -1, 0.5]).buffer);
    const header = {
      __metadata__: { format: 'pt' },
      second: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
      first: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    };
    const path = await handMade('hand.safetensors', null, data, `${JSON.stringify(header)}      `);
    const f = await openSafetensors(path);
    expect(f.names()).toEqual(['first', 'second']);
    expect([...(await f.readFloat32('first'))]).toEqual([1, -1]);
    expect([...(await f.readFloat32('second'))]).toEqual([0.5]);
    await f.close();
  });

  it('converts F16, BF16 and F64 tensors to float32', async () => {
    const path = join(dir, 'floats.safetensors');
    await writeSafetensors(path, [
      { name: 'h', dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x0001]) },
      { name: 'b', dtype: 'BF16', shape: [2], data: new Uint16Array([0x4049, 0xbf80]) },
      { name: 'd', dtype: 'F64', shape: [2], data: new Float64Array([0.1, -3]) },
    ]);
    const f = await openSafetensors(path);
    expect([...(await f.readFloat32('h'))]).toEqual([1, -2, 2 ** -24]);
    expect([...(await f.readFloat32('b'))]).toEqual([3.140625, -1]);
    expect([...(await f.readFloat32('d'))]).toEqual([Math.fround(0.1), -3]);
    await f.close();
  });
});

describe('header validation', () => {
  const valid = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
  const sixteen = new Uint8Array(16);

  it('a file shorter than the length prefix', async () => {
    const path = join(dir, 'short.safetensors');
    await writeFile(path, Buffer.from([1, 2, 3]));
    await expect(openSafetensors(path)).rejects.toThrow(/short\.safetensors: 3 bytes is too short/);
  });

  it('a header length beyond the file size', async () => {
    const path = join(dir, 'lying.safetensors');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(5000n);
    await writeFile(path, Buffer.concat([prefix, Buffer.from('{"a":1}')]));
    await expect(openSafetensors(path)).rejects.toThrow(
      /lying\.safetensors: the safetensors header claims 5000 bytes but the file has only 7/,
    );
  });

  it('a header above 100 MB', async () => {
    const path = join(dir, 'huge-header.safetensors');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(2n ** 40n);
    await writeFile(path, prefix);
    await expect(openSafetensors(path)).rejects.toThrow(
      /claims 1099511627776 bytes, above the 100000000-byte limit/,
    );
  });

  it('a header that is not JSON', async () => {
    const path = await handMade('notjson.safetensors', null, sixteen, '{"w": {"dtype": "F32",');
    await expect(openSafetensors(path)).rejects.toThrow(
      /notjson\.safetensors: the safetensors header is not valid JSON/,
    );
    const path2 = await handMade('notobject.safetensors', null, sixteen, '[1, 2]');
    await expect(openSafetensors(path2)).rejects.toThrow(/header is not a JSON object/);
    // serde_json refuses a byte-order mark; TextDecoder would strip it silently unless told not to.
    const bom = await handMade('bom.safetensors', null, sixteen, `\ufeff${JSON.stringify(valid)}`);
    await expect(openSafetensors(bom)).rejects.toThrow(
      /bom\.safetensors: the safetensors header is not valid JSON/,
    );
  });

  // Each header the reference reader (huggingface/safetensors read_metadata + Metadata::validate) accepts.
  it('accepts what the reference reader accepts', async () => {
    const accepted: [string, unknown, string | undefined, Uint8Array][] = [
      // HashMetadata.metadata is an Option: null is the same as absent.
      ['meta-null', { __metadata__: null, ...valid }, undefined, sixteen],
      // serde_json skips whitespace before the object (the reference has no "starts with {" check).
      ['leading-space', null, `  \n${JSON.stringify(valid)}`, sixteen],
      // Unknown fields in an entry are ignored (TensorInfo has no deny_unknown_fields).
      ['extra-field', { w: { ...valid.w, extra: [1] } }, undefined, sixteen],
      // Every dtype of the reference's Dtype enum, including FP8 variants, complex and sub-byte ones.
      [
        'new-dtypes',
        {
          a: { dtype: 'F8_E8M0', shape: [2], data_offsets: [0, 2] },
          b: { dtype: 'F8_E4M3FNUZ', shape: [1], data_offsets: [2, 3] },
          c: { dtype: 'F4', shape: [2, 3], data_offsets: [3, 6] },
          d: { dtype: 'F6_E2M3', shape: [4], data_offsets: [6, 9] },
          e: { dtype: 'C64', shape: [1], data_offsets: [9, 17] },
        },
        undefined,
        new Uint8Array(17),
      ],
    ];
    for (const [name, header, text, data] of accepted) {
      const f = await openSafetensors(await handMade(`${name}.safetensors`, header, data, text));
      expect(f.metadata, name).toEqual({});
      await f.close();
    }
    const f = await openSafetensors(join(dir, 'new-dtypes.safetensors'));
    expect(f.info('c')).toMatchObject({ dtype: 'F4', byteLength: 3 });
    expect(f.info('d')).toMatchObject({ dtype: 'F6_E2M3', byteLength: 3 });
    await expect(f.readFloat32('a')).rejects.toThrow(/tensor "a" has dtype F8_E8M0; only F32, F16, BF16/);
    await f.close();
    // The reference's MisalignedSlice: sub-byte elements that leave a partial byte.
    const odd = await handMade(
      'f4-odd.safetensors',
      { c: { dtype: 'F4', shape: [3], data_offsets: [0, 2] } },
      new Uint8Array(2),
    );
    await expect(openSafetensors(odd)).rejects.toThrow(
      /tensor "c": 3 elements of F4 \(12 bits\) do not fill whole bytes/,
    );
  });

  it('a truncated file (data offsets past the end)', async () => {
    const path = await handMade('trunc.safetensors', valid, sixteen);
    await truncate(path, (await readFile(path)).byteLength - 4);
    await expect(openSafetensors(path)).rejects.toThrow(
      /trunc\.safetensors: tensor "w": data_offsets \[0, 16\] run past the end of the data \(12 bytes after the header\).*truncated/,
    );
  });

  it('a byte range that does not match shape × dtype size', async () => {
    const path = await handMade(
      'size.safetensors',
      { w: { dtype: 'F32', shape: [3, 2], data_offsets: [0, 16] } },
      sixteen,
    );
    await expect(openSafetensors(path)).rejects.toThrow(
      /tensor "w": data_offsets \[0, 16\] span 16 bytes, but shape \[3,2\] of F32 needs 24/,
    );
  });

  it('overlapping tensors, holes and unclaimed trailing bytes', async () => {
    const overlap = await handMade(
      'overlap.safetensors',
      {
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
      },
      new Uint8Array(12),
    );
    await expect(openSafetensors(overlap)).rejects.toThrow(
      /tensor "b" \(bytes \[4, 12\)\) overlaps tensor "a"/,
    );
    const hole = await handMade(
      'hole.safetensors',
      {
        a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
        b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
      },
      new Uint8Array(12),
    );
    await expect(openSafetensors(hole)).rejects.toThrow(/hole of 4 bytes before tensor "b"/);
    const trailing = await handMade('trailing.safetensors', valid, new Uint8Array(20));
    await expect(openSafetensors(trailing)).rejects.toThrow(/cover 16 bytes of data but the file holds 20/);
  });

  it('unknown dtypes, bad shapes, bad offsets, bad metadata', async () => {
    const cases: [unknown, RegExp][] = [
      [
        { w: { dtype: 'F31', shape: [4], data_offsets: [0, 16] } },
        /tensor "w": unknown dtype "F31".*safetensors dtypes are F64, F32/,
      ],
      [{ w: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, /tensor "w": shape \[-4\] is not a list/],
      [
        { w: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } },
        /tensor "w": data_offsets \[16,0\] is not a pair/,
      ],
      [{ w: { dtype: 'F32', shape: [4] } }, /tensor "w": data_offsets undefined is not a pair/],
      [{ w: 3 }, /tensor "w": header entry is not an object/],
      [{ __metadata__: { format: 1 }, ...valid }, /"__metadata__"."format" is 1, not a string/],
    ];
    for (const [i, [header, message]] of cases.entries()) {
      const path = await handMade(`bad-${i}.safetensors`, header, sixteen);
      await expect(openSafetensors(path)).rejects.toThrow(message);
    }
  });

  it('a missing file', async () => {
    await expect(openSafetensors(join(dir, 'nope.safetensors'))).rejects.toThrow(
      /nope\.safetensors: no such file/,
    );
  });
});

describe('streaming reads', () => {
  it('reading one tensor reads only its bytes, even from a large (sparse) file', async () => {
    // 256 MiB of declared data, created sparse (no bytes written), so the test costs nothing.
    const bigRows = 65536;
    const bigCols = 1024;
    const header = {
      small: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
      big: { dtype: 'F32', shape: [bigRows, bigCols], data_offsets: [16, 16 + bigRows * bigCols * 4] },
    };
    const path = await handMade(
      'big.safetensors',
      header,
      new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer),
    );
    const size = (await readFile(path)).byteLength + bigRows * bigCols * 4;
    await truncate(path, size);
    // Mark the last row so reading rows at the end of the file is checked too.
    const fh = await open(path, 'r+');
    await fh.write(new Uint8Array(new Float32Array([42]).buffer), 0, 4, size - 4);
    await fh.close();

    const f = await openSafetensors(path);
    expect(f.fileSize).toBe(size);
    const before = process.memoryUsage().arrayBuffers;
    const small = await f.readRaw('small');
    expect(small.byteLength).toBe(16);
    expect(small.buffer.byteLength).toBe(16);
    expect([...(await f.readFloat32('small'))]).toEqual([1, 2, 3, 4]);
    const lastRows = await f.readRows('big', bigRows - 2, bigRows);
    expect(lastRows.byteLength).toBe(2 * bigCols * 4);
    expect(new Float32Array(lastRows.buffer)[2 * bigCols - 1]).toBe(42);
    // Far below the 256 MiB a whole-file read would take (allowing for unrelated allocations).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
    await expect(f.readRows('big', 5, bigRows + 1)).rejects.toThrow(/out of range/);
    await f.close();
  });
});

describe('atomic streaming writer', () => {
  it('writes tensors in chunks; the target appears only at finish()', async () => {
    const path = join(dir, 'chunked.safetensors');
    const w = await SafetensorsWriter.create(path, [
      { name: 'a', dtype: 'F32', shape: [4] },
      { name: 'z', dtype: 'F32', shape: [0] },
      { name: 'b', dtype: 'U8', shape: [2] },
    ]);
    expect(w.nextTensor).toBe('a');
    await w.write('a', new Float32Array([1, 2]));
    await w.write('a', new Float32Array([3, 4]));
    expect(w.nextTensor).toBe('b');
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(true);
    await w.write('b', new Uint8Array([5, 6]));
    await w.finish();
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(false);
    const f = await openSafetensors(path);
    expect([...(await f.readFloat32('a'))]).toEqual([1, 2, 3, 4]);
    expect([...(await f.readRaw('b'))]).toEqual([5, 6]);
    await f.close();
  });

  it('a failed write leaves the previous file untouched and no temporary file', async () => {
    const path = join(dir, 'keep.safetensors');
    await writeSafetensors(path, { old: { dtype: 'U8', shape: [1], data: new Uint8Array([1]) } });
    const before = await readFile(path);
    const w = await SafetensorsWriter.create(path, [
      { name: 'a', dtype: 'F32', shape: [2] },
      { name: 'b', dtype: 'F32', shape: [2] },
    ]);
    await expect(w.write('b', new Float32Array(2))).rejects.toThrow(/expected bytes of tensor "a" next/);
    expect((await readFile(path)).equals(before)).toBe(true);
    expect((await readdir(dir)).filter((e) => e.includes('.tmp-'))).toEqual([]);

    const w2 = await SafetensorsWriter.create(path, [{ name: 'a', dtype: 'F32', shape: [2] }]);
    await w2.write('a', new Float32Array(1));
    await expect(w2.finish()).rejects.toThrow(/before the bytes of tensor "a" were all written/);
    expect((await readFile(path)).equals(before)).toBe(true);

    const w3 = await SafetensorsWriter.create(path, [{ name: 'a', dtype: 'F32', shape: [2] }]);
    await expect(w3.write('a', new Float32Array(3))).rejects.toThrow(/takes 8 bytes; got 12/);
    expect((await readdir(dir)).filter((e) => e.includes('.tmp-'))).toEqual([]);
  });

  it('rejects invalid specs before creating anything', async () => {
    const path = join(dir, 'invalid.safetensors');
    await expect(
      SafetensorsWriter.create(path, [
        { name: 'a', dtype: 'F32', shape: [1] },
        { name: 'a', dtype: 'F32', shape: [1] },
      ]),
    ).rejects.toThrow(/tensor "a" is listed twice/);
    await expect(
      SafetensorsWriter.create(path, [{ name: 'a', dtype: 'F12' as SafetensorsDtype, shape: [1] }]),
    ).rejects.toThrow(/unknown dtype "F12"/);
    await expect(SafetensorsWriter.create(path, [{ name: 'a', dtype: 'F32', shape: [1.5] }])).rejects.toThrow(
      /invalid shape/,
    );
    expect(existsSync(path)).toBe(false);
  });
});
