/**
 * The S3 artifact store (`s3://bucket/prefix`), on @aws-sdk/client-s3 and @aws-sdk/lib-storage.
 *
 * - Uploads stream from disk: lib-storage's `Upload` sends parts of `partSizeBytes` with `queueSize` in flight
 *   (memory ≤ partSize · queueSize), and aborts the multipart upload on failure, so a failed upload leaves no
 *   object. `multipart: false` sends one streamed PutObject instead (S3-compatible servers without multipart).
 * - Downloads stream to a temporary file and resume with a ranged GET from the last byte received when the
 *   connection drops; `openRead` serves byte ranges.
 * - Every request is retried on throttling and transient errors (retry.ts). The SDK's own retries are left at
 *   its default; ours sit above them so the behaviour is the same under a mocked client.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { UserError } from '../../errors.ts';
import { tempPathFor } from '../../output-cleanup.ts';
import { checkKey, type ArtifactStore, type ByteRange, type StoredObject } from './artifact-store.ts';
import { withRetry, type RetryOptions } from './retry.ts';

export interface S3StoreOptions {
  /** A ready client (tests, custom credentials). Otherwise one is built from the fields below and the environment. */
  client?: S3Client;
  region?: string;
  /** An S3-compatible endpoint, e.g. http://127.0.0.1:4568 (default: AWS; or MOKA_S3_ENDPOINT). */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** Extra client settings (credentials, checksum behaviour for S3-compatible servers). */
  clientConfig?: S3ClientConfig;
  /** Multipart part size in bytes (default 16 MiB; S3's minimum is 5 MiB). */
  partSizeBytes?: number;
  /** Parts uploaded at once (default 4). */
  queueSize?: number;
  /** false: one streamed PutObject per file (≤ 5 GB) instead of lib-storage's multipart upload. */
  multipart?: boolean;
  retry?: RetryOptions;
}

export function parseS3Uri(uri: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  if (!m || !m[1]) throw new UserError(`"${uri}" is not an S3 URI (s3://bucket/prefix)`);
  return { bucket: m[1], prefix: checkKey(m[2]!.replace(/\/+$/, '')) };
}

function s3ErrorName(err: unknown): string {
  return (err as { name?: string })?.name ?? '';
}

function isNotFound(err: unknown): boolean {
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  return s3ErrorName(err) === 'NoSuchKey' || s3ErrorName(err) === 'NotFound' || status === 404;
}

export class S3Store implements ArtifactStore {
  readonly uri: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;
  private readonly opts: S3StoreOptions;

  constructor(rootUri: string, opts: S3StoreOptions = {}) {
    const { bucket, prefix } = parseS3Uri(rootUri);
    this.bucket = bucket;
    this.prefix = prefix;
    this.uri = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
    this.opts = opts;
    const endpoint = opts.endpoint ?? process.env.MOKA_S3_ENDPOINT;
    this.client =
      opts.client ??
      new S3Client({
        ...(opts.region ? { region: opts.region } : {}),
        ...(endpoint ? { endpoint, forcePathStyle: opts.forcePathStyle ?? true } : {}),
        ...(opts.forcePathStyle !== undefined ? { forcePathStyle: opts.forcePathStyle } : {}),
        ...opts.clientConfig,
      });
  }

  private key(key: string): string {
    const k = checkKey(key);
    return this.prefix ? (k ? `${this.prefix}/${k}` : this.prefix) : k;
  }

  private retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(what, fn, this.opts.retry);
  }

  uriOf(key: string): string {
    const k = this.key(key);
    return `s3://${this.bucket}/${k}`;
  }

  localPath(): null {
    return null;
  }

  async check(): Promise<void> {
    try {
      await this.retry(`list ${this.uri}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 })),
      );
    } catch (err) {
      const name = s3ErrorName(err);
      const why =
        name === 'NoSuchBucket'
          ? `the bucket "${this.bucket}" does not exist`
          : name === 'AccessDenied' || name === 'Forbidden'
            ? 'access denied (check the credentials and the bucket policy)'
            : name === 'CredentialsProviderError'
              ? 'no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)'
              : `${name || 'error'}: ${(err as Error).message}`;
      throw new UserError(`the store ${this.uri} cannot be reached: ${why}`);
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.retry(`head ${this.uriOf(key)}`, () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) })),
      );
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async readText(key: string): Promise<string | null> {
    try {
      return await this.retry(`get ${this.uriOf(key)}`, async () => {
        const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
        return await r.Body!.transformToString('utf8');
      });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async writeText(key: string, text: string): Promise<void> {
    const body = Buffer.from(text, 'utf8');
    await this.retry(`put ${this.uriOf(key)}`, () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.key(key),
          Body: body,
          ContentLength: body.length,
        }),
      ),
    );
  }

  async putFile(key: string, localFile: string): Promise<void> {
    const size = (await stat(localFile)).size;
    const Key = this.key(key);
    await this.retry(`upload ${this.uriOf(key)}`, async () => {
      if (this.opts.multipart === false) {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key,
            Body: createReadStream(localFile),
            ContentLength: size,
          }),
        );
        return;
      }
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key, Body: createReadStream(localFile), ContentLength: size },
        partSize: this.opts.partSizeBytes ?? 16 * 2 ** 20,
        queueSize: this.opts.queueSize ?? 4,
        // A failed upload is aborted, so its parts neither cost storage nor ever form an object.
        leavePartsOnError: false,
      });
      await upload.done();
    });
  }

  async getFile(key: string, localFile: string): Promise<void> {
    await mkdir(dirname(localFile), { recursive: true });
    const tmp = tempPathFor(localFile);
    const fh = await open(tmp, 'w');
    let offset = 0;
    let total: number | null = null;
    try {
      await this.retry(`download ${this.uriOf(key)}`, async () => {
        // After a dropped connection, continue with a ranged GET from the first byte not yet written.
        const r = await this.client
          .send(
            new GetObjectCommand({
              Bucket: this.bucket,
              Key: this.key(key),
              ...(offset > 0 ? { Range: `bytes=${offset}-` } : {}),
            }),
          )
          .catch((err: unknown) => {
            if (isNotFound(err)) throw new UserError(`${this.uriOf(key)} does not exist`);
            throw err;
          });
        if (total === null) total = offset + (r.ContentLength ?? 0);
        for await (const chunk of r.Body as Readable) {
          const buf = chunk as Uint8Array;
          await fh.write(buf, 0, buf.length, offset);
          offset += buf.length;
        }
      });
      if (total !== null && offset !== total) {
        throw new Error(`download of ${this.uriOf(key)} ended at byte ${offset} of ${total}`);
      }
      await fh.close();
      await rename(tmp, localFile);
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async openRead(key: string, range?: ByteRange): Promise<Readable> {
    return this.retry(`get ${this.uriOf(key)}`, async () => {
      try {
        const r = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: this.key(key),
            ...(range ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {}),
          }),
        );
        return r.Body as Readable;
      } catch (err) {
        if (isNotFound(err)) throw new UserError(`${this.uriOf(key)} does not exist`);
        throw err;
      }
    });
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const p = this.key(prefix);
    const full = p ? `${p}/` : '';
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const page = await this.retry(`list ${this.uriOf(prefix)}`, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: full,
            ...(token ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const o of page.Contents ?? [])
        out.push({ key: o.Key!.slice(strip), size: o.Size ?? 0, ...(o.ETag ? { etag: o.ETag } : {}) });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    // One DeleteObject per key: DeleteObjects requires a checksum header some S3-compatible servers reject, and
    // what the pipeline deletes (old checkpoints, a stale marker) is a handful of objects.
    const keys = [checkKey(key), ...(await this.list(key)).map((o) => o.key)];
    for (const k of new Set(keys)) {
      await this.retry(`delete ${this.uriOf(k)}`, () =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(k) })),
      );
    }
  }
}
