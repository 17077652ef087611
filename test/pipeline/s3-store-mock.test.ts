/**
 * The S3 store against aws-sdk-client-mock: which requests it sends (multipart parts, ranges, the marker) and how
 * it behaves on throttling, transient and permanent errors. No network.
 */
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { S3Store, putDir } from '../../lib/pipeline/store/index.ts';

const s3 = mockClient(S3Client);
const fast = { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 2 };

function awsError(name: string, status: number): Error {
  return Object.assign(new Error(`${name} (${status})`), { name, $metadata: { httpStatusCode: status } });
}

/** A GetObject body: a Node stream with the SDK's transformToString. */
function body(chunks: Buffer[], failAfter?: Error): Readable & { transformToString: () => Promise<string> } {
  async function* gen() {
    for (const c of chunks) yield c;
    if (failAfter) throw failAfter;
  }
  return Object.assign(Readable.from(gen()), {
    transformToString: async () => Buffer.concat(chunks).toString('utf8'),
  });
}

function store(extra: Partial<ConstructorParameters<typeof S3Store>[1]> = {}) {
  return new S3Store('s3://bucket/root', {
    client: new S3Client({ region: 'us-east-1' }),
    retry: fast,
    ...extra,
  });
}

let dir: string;
beforeEach(() => {
  s3.reset();
  dir = mkdtempSync(join(tmpdir(), 'moka-s3mock-'));
});
afterEach(() => s3.reset());

describe('S3Store (mocked client)', () => {
  it('uploads a file larger than the part size as a streamed multipart upload', async () => {
    const file = join(dir, 'big.bin');
    const size = 11 * 2 ** 20 + 123;
    writeFileSync(file, Buffer.alloc(size, 7));
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'up-1' });
    s3.on(UploadPartCommand).callsFake((input: { PartNumber: number }) => ({
      ETag: `"e${input.PartNumber}"`,
    }));
    s3.on(CompleteMultipartUploadCommand).resolves({});
    await store({ partSizeBytes: 5 * 2 ** 20, queueSize: 2 }).putFile('runs/r/model.bin', file);
    expect(s3.commandCalls(CreateMultipartUploadCommand)[0]!.args[0].input).toMatchObject({
      Bucket: 'bucket',
      Key: 'root/runs/r/model.bin',
    });
    const parts = s3.commandCalls(UploadPartCommand).map((c) => c.args[0].input);
    expect(parts.map((p) => p.PartNumber).sort()).toEqual([1, 2, 3]);
    const complete = s3.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input;
    expect(complete.MultipartUpload?.Parts?.map((p) => p.PartNumber)).toEqual([1, 2, 3]);
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(0);
  });

  it('retries throttling (SlowDown 503, ThrottlingException) and 500s with backoff, then succeeds', async () => {
    s3.on(PutObjectCommand)
      .rejectsOnce(awsError('SlowDown', 503))
      .rejectsOnce(awsError('ThrottlingException', 400))
      .rejectsOnce(awsError('InternalError', 500))
      .resolves({});
    await store().writeText('runs/r/status.json', '{}');
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(4);
  });

  it('gives up after maxAttempts, and fails at once on a permanent error (403)', async () => {
    s3.on(PutObjectCommand).rejects(awsError('SlowDown', 503));
    await expect(store().writeText('k', 'x')).rejects.toThrow(/SlowDown/);
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(fast.maxAttempts);
    s3.reset();
    s3.on(PutObjectCommand).rejects(awsError('AccessDenied', 403));
    await expect(store().writeText('k', 'x')).rejects.toThrow(/AccessDenied/);
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(1);
  });

  it('reads byte ranges, and resumes a dropped download with a ranged GET from the first missing byte', async () => {
    s3.on(GetObjectCommand, { Range: 'bytes=5-9' }).resolves({ Body: body([Buffer.from('56789')]) as never });
    const ranged = store().openRead('obj', { start: 5, end: 9 });
    const chunks: Buffer[] = [];
    for await (const c of await ranged) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('56789');

    s3.reset();
    const full = Buffer.from('0123456789abcdefghij');
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    s3.on(GetObjectCommand)
      .resolvesOnce({ Body: body([full.subarray(0, 8)], reset) as never, ContentLength: full.length })
      .resolvesOnce({ Body: body([full.subarray(8)]) as never, ContentLength: full.length - 8 });
    const local = join(dir, 'out', 'file.bin');
    await store().getFile('obj', local);
    expect(readFileSync(local).toString()).toBe(full.toString());
    const gets = s3.commandCalls(GetObjectCommand).map((c) => c.args[0].input.Range);
    expect(gets).toEqual([undefined, 'bytes=8-']);
  });

  it('a failure in the middle of a folder upload aborts the multipart upload and writes no completion marker', async () => {
    const src = join(dir, 'ckpt');
    mkdirSync(src);
    writeFileSync(join(src, 'a.json'), '{"small": true}');
    writeFileSync(join(src, 'b.safetensors'), Buffer.alloc(6 * 2 ** 20, 1));
    s3.on(ListObjectsV2Command).resolves({ Contents: [] });
    s3.on(DeleteObjectCommand).resolves({});
    s3.on(PutObjectCommand).resolves({});
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'up-2' });
    s3.on(UploadPartCommand).resolvesOnce({ ETag: '"1"' }).rejects(awsError('AccessDenied', 403));
    s3.on(AbortMultipartUploadCommand).resolves({});
    await expect(
      putDir(store({ partSizeBytes: 5 * 2 ** 20 }), src, 'runs/r/variants/v/checkpoints/step-4'),
    ).rejects.toThrow(/AccessDenied/);
    const keys = s3.commandCalls(PutObjectCommand).map((c) => c.args[0].input.Key);
    expect(keys).toContain('root/runs/r/variants/v/checkpoints/step-4/a.json');
    expect(keys.some((k) => k!.endsWith('_COMPLETE'))).toBe(false);
    expect(s3.commandCalls(AbortMultipartUploadCommand)[0]!.args[0].input).toMatchObject({
      UploadId: 'up-2',
    });
    // The old marker was removed before anything was written.
    const deletes = s3.commandCalls(DeleteObjectCommand).map((c) => c.args[0].input.Key);
    expect(deletes[0]).toBe('root/runs/r/variants/v/checkpoints/step-4/_COMPLETE');
  });

  it('lists every page of a prefix, keys relative to the store root', async () => {
    s3.on(ListObjectsV2Command)
      .resolvesOnce({
        Contents: [{ Key: 'root/runs/r/a', Size: 1 }],
        IsTruncated: true,
        NextContinuationToken: 't',
      })
      .resolvesOnce({ Contents: [{ Key: 'root/runs/r/b/c', Size: 2, ETag: '"x"' }], IsTruncated: false });
    expect(await store().list('runs/r')).toEqual([
      { key: 'runs/r/a', size: 1 },
      { key: 'runs/r/b/c', size: 2, etag: '"x"' },
    ]);
    expect(s3.commandCalls(ListObjectsV2Command)[1]!.args[0].input).toMatchObject({
      Prefix: 'root/runs/r/',
      ContinuationToken: 't',
    });
  });

  it('says why a store cannot be reached', async () => {
    s3.on(ListObjectsV2Command).rejects(awsError('NoSuchBucket', 404));
    await expect(store().check()).rejects.toThrow(
      /s3:\/\/bucket\/root cannot be reached: the bucket "bucket" does not exist/,
    );
  });
});
