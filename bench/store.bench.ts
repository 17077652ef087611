/**
 * Artifact-store benchmark (issue: the pipeline): the S3 store against an S3-compatible server on loopback
 * (s3rver, in its own process): MB/s of a 1 GiB upload (lib-storage multipart, 16 MiB parts, 4 in flight) and
 * download (streamed to disk), each against the same transfer through the local-folder store measured in the same
 * run; and the memory high-water mark of those transfers against the same transfer of a 256 MiB file, which must
 * not grow with the file size (ratio ≈ 1). Each transfer runs in a fresh process (bench/store-transfer.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { round, type BenchEntry, type Suite } from './harness.ts';

const MiB = 2 ** 20;

async function writeFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(16 * MiB);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  try {
    for (let done = 0; done < bytes; done += chunk.length)
      await fh.write(chunk, 0, Math.min(chunk.length, bytes - done));
  } finally {
    await fh.close();
  }
}

interface Transfer {
  ms: number;
  before: number;
  maxRss: number;
}

function transfer(
  store: string,
  op: 'upload' | 'download',
  key: string,
  file: string,
  endpoint?: string,
): Transfer {
  const child = fileURLToPath(new URL('./store-transfer.ts', import.meta.url));
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', child, store, op, key, file, ...(endpoint ? [endpoint] : [])],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`store-transfer ${op} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Transfer;
}

export const storeSuite: Suite = {
  name: 'store',
  run: async () => {
    const root = await mkdtemp(join(tmpdir(), 'moka-bench-store-'));
    const server = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(new URL('./s3rver-server.ts', import.meta.url)),
        join(root, 's3rver'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: server.stdout! }).once('line', resolve);
        server.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
      });
      const { endpoint } = JSON.parse(line) as { endpoint: string };
      const sizes = { '256MiB': 256 * MiB, '1GiB': 1024 * MiB };
      const results: Record<string, Record<string, Transfer>> = {};
      for (const [label, bytes] of Object.entries(sizes)) {
        process.stderr.write(`bench: store transfers of ${label} …\n`);
        const src = join(root, `src-${label}.bin`);
        await writeFile(src, bytes);
        results[label] = {
          s3Upload: transfer('s3://bench/store', 'upload', `f-${label}`, src, endpoint),
          s3Download: transfer(
            's3://bench/store',
            'download',
            `f-${label}`,
            join(root, `down-${label}.bin`),
            endpoint,
          ),
          fileUpload: transfer(join(root, 'folder-store'), 'upload', `f-${label}`, src),
          fileDownload: transfer(
            join(root, 'folder-store'),
            'download',
            `f-${label}`,
            join(root, `fdown-${label}.bin`),
          ),
        };
        await rm(join(root, `down-${label}.bin`), { force: true });
        await rm(join(root, `fdown-${label}.bin`), { force: true });
      }
      const big = results['1GiB']!;
      const small = results['256MiB']!;
      const mbps = (t: Transfer) => round(sizes['1GiB'] / 1e6 / (t.ms / 1e3));
      const mib = (x: number) => round(x / MiB);
      const entries: BenchEntry[] = [];
      for (const op of ['Upload', 'Download'] as const) {
        const s3 = big[`s3${op}`]!;
        const local = big[`file${op}`]!;
        entries.push({
          name: `store.s3.${op.toLowerCase()}.1GiB.throughput`,
          value: mbps(s3),
          unit: 'MB/s',
          baseline: `local-folder store ${op.toLowerCase()} of the same file (a file copy)`,
          baselineValue: mbps(local),
          ratio: round(mbps(s3) / mbps(local)),
          notes: `s3rver 3.7 on loopback (its own process, writing to the same disk); ${op === 'Upload' ? 'lib-storage multipart, 16 MiB parts, 4 in flight' : 'one streamed GET to a temp file + rename'}; ${round(s3.ms / 1e3)} s`,
        });
        const smallS3 = small[`s3${op}`]!;
        entries.push({
          name: `store.s3.${op.toLowerCase()}.1GiB.rss_high_water`,
          value: mib(s3.maxRss),
          unit: 'MiB',
          baseline:
            'the same transfer of a 256 MiB file; ratio = baseline / value (≈ 1: memory does not grow with file size)',
          baselineValue: mib(smallS3.maxRss),
          ratio: round(smallS3.maxRss / s3.maxRss),
          notes: `process high-water mark; RSS before the transfer ${mib(s3.before)} MiB (Node + the AWS SDK)`,
        });
      }
      return entries;
    } finally {
      server.kill('SIGTERM');
      await rm(root, { recursive: true, force: true });
    }
  },
};
