/**
 * The S3 store end to end against s3rver (an S3-compatible server started on loopback): folders with markers,
 * listing, ranged reads, downloads and deletes, with the client settings s3rver needs (aws-pipeline-notes.md
 * §10). Uploads are tested both ways: one streamed PutObject (`multipart: false`) and lib-storage's multipart.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Store, getDir, isComplete, putDir } from '../../lib/pipeline/store/index.ts';
import { startS3rver, type LocalS3 } from '../helpers/s3rver.ts';

let s3: LocalS3;
const dir = mkdtempSync(join(tmpdir(), 'moka-s3rver-'));

beforeAll(async () => {
  s3 = await startS3rver(['bucket'], join(dir, 'server'));
});
afterAll(async () => {
  await s3?.close();
});

describe.each([
  ['single PutObject', false],
  ['lib-storage multipart', true],
])('S3Store against s3rver (%s)', (_label, multipart) => {
  it('uploads a folder with its marker last, lists it, reads ranges and downloads it back', async () => {
    const store = new S3Store(
      `s3://bucket/e2e-${multipart}`,
      s3.options({ multipart, partSizeBytes: 5 * 2 ** 20 }),
    );
    await store.check();
    const src = join(dir, `src-${multipart}`);
    mkdirSync(join(src, 'sub'), { recursive: true });
    const big = Buffer.alloc(6 * 2 ** 20 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 255;
    writeFileSync(join(src, 'weights.bin'), big);
    writeFileSync(join(src, 'sub', 'config.json'), '{"a": 1}');
    expect(await isComplete(store, 'runs/x/adapter')).toBe(false);
    await putDir(store, src, 'runs/x/adapter');
    expect(await isComplete(store, 'runs/x/adapter')).toBe(true);
    expect((await store.list('runs/x')).map((o) => [o.key, o.size])).toEqual([
      ['runs/x/adapter/_COMPLETE', expect.any(Number)],
      ['runs/x/adapter/sub/config.json', 8],
      ['runs/x/adapter/weights.bin', big.length],
    ]);
    const chunks: Buffer[] = [];
    for await (const c of await store.openRead('runs/x/adapter/weights.bin', { start: 1000, end: 1009 }))
      chunks.push(c as Buffer);
    expect(Buffer.concat(chunks)).toEqual(big.subarray(1000, 1010));

    const back = join(dir, `back-${multipart}`);
    await getDir(store, 'runs/x/adapter', back);
    expect(readFileSync(join(back, 'weights.bin')).equals(big)).toBe(true);
    expect(readFileSync(join(back, 'sub', 'config.json'), 'utf8')).toBe('{"a": 1}');

    expect(await store.readText('runs/x/missing.json')).toBeNull();
    await store.writeText('runs/x/status.json', '{"ok":true}');
    expect(await store.readText('runs/x/status.json')).toBe('{"ok":true}');
    await store.delete('runs/x/adapter');
    expect(await isComplete(store, 'runs/x/adapter')).toBe(false);
    expect((await store.list('runs/x')).map((o) => o.key)).toEqual(['runs/x/status.json']);
  });
});

it('refuses a bucket that does not exist, before any work', async () => {
  const store = new S3Store('s3://no-such-bucket/runs', s3.options());
  await expect(store.check()).rejects.toThrow(/no-such-bucket" does not exist/);
});
