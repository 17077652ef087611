/**
 * An S3-compatible server on loopback for tests and benchmarks (s3rver), and the S3 store settings it needs:
 * path-style addressing, its fixed S3RVER credentials, and checksums only when required (s3rver rejects the
 * CRC32 trailers newer SDKs send by default; aws-pipeline-notes.md §10).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import type { S3StoreOptions } from '../../lib/pipeline/store/index.ts';

export interface LocalS3 {
  endpoint: string;
  options(extra?: Partial<S3StoreOptions>): S3StoreOptions;
  close(): Promise<void>;
}

export async function startS3rver(buckets: string[] = ['bucket'], directory?: string): Promise<LocalS3> {
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: directory ?? mkdtempSync(join(tmpdir(), 'moka-s3rver-')),
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  });
  const { port } = (await server.run()) as { port: number };
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    options: (extra = {}) => ({
      endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      clientConfig: {
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      },
      retry: { maxAttempts: 3, baseDelayMs: 5 },
      ...extra,
    }),
    close: () => server.close(),
  };
}
