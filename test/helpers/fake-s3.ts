/**
 * An in-memory S3 bucket behind aws-sdk-client-mock: GetObject (with Range), HeadObject, PutObject,
 * ListObjectsV2 (prefix), DeleteObject, enough for the artifact store (lib/pipeline/store/s3-store.ts) and the
 * deployed-run commands. Objects are Buffers keyed by "bucket/key".
 */
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';

const notFound = () =>
  Object.assign(new Error('not found'), { name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } });

async function bytesOf(body: unknown): Promise<Buffer> {
  if (typeof body === 'string') return Buffer.from(body);
  if (body instanceof Uint8Array) return Buffer.from(body);
  const chunks: Buffer[] = [];
  for await (const c of body as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/** A streaming body as the SDK returns it (iterable, with transformToString). */
function bodyOf(buf: Buffer) {
  return Object.assign(Readable.from([buf]), {
    transformToString: async (encoding: BufferEncoding = 'utf8') => buf.toString(encoding),
    transformToByteArray: async () => new Uint8Array(buf),
  });
}

export function fakeS3() {
  const objects = new Map<string, Buffer>();
  const mock = mockClient(S3Client);
  const install = () => {
    mock.on(PutObjectCommand).callsFake(async (i: { Bucket: string; Key: string; Body: unknown }) => {
      objects.set(`${i.Bucket}/${i.Key}`, await bytesOf(i.Body));
      return { ETag: '"etag"' };
    });
    mock.on(GetObjectCommand).callsFake(async (i: { Bucket: string; Key: string; Range?: string }) => {
      const buf = objects.get(`${i.Bucket}/${i.Key}`);
      if (!buf) throw notFound();
      const m = i.Range ? /^bytes=(\d+)-(\d*)$/.exec(i.Range) : null;
      const part = m ? buf.subarray(Number(m[1]), m[2] ? Number(m[2]) + 1 : undefined) : buf;
      return { Body: bodyOf(part), ContentLength: part.length };
    });
    mock.on(HeadObjectCommand).callsFake(async (i: { Bucket: string; Key: string }) => {
      const buf = objects.get(`${i.Bucket}/${i.Key}`);
      if (!buf)
        throw Object.assign(new Error('not found'), { name: 'NotFound', $metadata: { httpStatusCode: 404 } });
      return { ContentLength: buf.length };
    });
    mock.on(ListObjectsV2Command).callsFake(async (i: { Bucket: string; Prefix?: string }) => {
      const p = `${i.Bucket}/${i.Prefix ?? ''}`;
      const Contents = [...objects]
        .filter(([k]) => k.startsWith(p))
        .map(([k, v]) => ({ Key: k.slice(i.Bucket.length + 1), Size: v.length }));
      return { Contents, IsTruncated: false, KeyCount: Contents.length };
    });
    mock.on(DeleteObjectCommand).callsFake(async (i: { Bucket: string; Key: string }) => {
      objects.delete(`${i.Bucket}/${i.Key}`);
      return {};
    });
  };
  install();
  return {
    mock,
    objects,
    put: (bucket: string, key: string, body: string | Buffer) =>
      objects.set(`${bucket}/${key}`, Buffer.from(body)),
    text: (bucket: string, key: string) => objects.get(`${bucket}/${key}`)?.toString('utf8'),
    reset() {
      objects.clear();
      mock.reset();
      install();
    },
  };
}
