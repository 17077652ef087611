/**
 * One artifact-store transfer in a fresh process, for bench/store.bench.ts: uploads FILE to KEY or downloads KEY
 * to FILE, and prints {ms, before, maxRss} (bytes): the resident set before the transfer and the process's
 * high-water mark after it. Usage:
 *   node --import tsx bench/store-transfer.ts STORE_URI upload|download KEY FILE [ENDPOINT]
 */
import { openStore } from '../lib/pipeline/store/index.ts';

const [storeUri, op, key, file, endpoint] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string?,
];
const store = openStore(storeUri, {
  s3: {
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    region: 'us-east-1',
    clientConfig: {
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  },
});
const before = process.memoryUsage().rss;
const t0 = performance.now();
if (op === 'upload') await store.putFile(key, file);
else await store.getFile(key, file);
const ms = performance.now() - t0;
process.stdout.write(`${JSON.stringify({ ms, before, maxRss: process.resourceUsage().maxRSS * 1024 })}\n`);
