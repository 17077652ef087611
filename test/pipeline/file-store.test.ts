import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStore, getDir, isComplete, openStore, putDir, S3Store } from '../../lib/pipeline/store/index.ts';
import { parseRunConfig } from '../../lib/pipeline/run-config.ts';
import { openRun } from '../../lib/pipeline/run-layout.ts';

describe('FileStore', () => {
  const root = mkdtempSync(join(tmpdir(), 'moka-filestore-'));
  const store = new FileStore(root);

  it('writes atomically, reads, lists recursively and deletes', async () => {
    expect(await store.readText('runs/a/status.json')).toBeNull();
    await store.writeText('runs/a/status.json', '{"s": 1}');
    await store.writeText('runs/a/x/y.txt', 'y');
    expect(await store.readText('runs/a/status.json')).toBe('{"s": 1}');
    expect(readdirSync(join(root, 'runs', 'a')).sort()).toEqual(['status.json', 'x']); // no temp files left
    expect(await store.list('runs/a')).toEqual([
      { key: 'runs/a/status.json', size: 8 },
      { key: 'runs/a/x/y.txt', size: 1 },
    ]);
    const chunks: Buffer[] = [];
    for await (const c of await store.openRead('runs/a/status.json', { start: 1, end: 3 }))
      chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('"s"');
    await store.delete('runs/a/x');
    expect((await store.list('runs/a')).map((o) => o.key)).toEqual(['runs/a/status.json']);
    expect(store.uriOf('runs/a b')).toBe(`${store.uri}/runs/a%20b`);
  });

  it('marks a folder complete last, and getDir refuses an incomplete one', async () => {
    const src = join(root, '..', `src-${process.pid}`);
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'a.bin'), 'aaaa');
    writeFileSync(join(src, 'd', 'b.json'), '{}');
    let completeSeen = false;
    await putDir(store, src, 'runs/a/adapter', {
      afterFile: async () => {
        completeSeen ||= await isComplete(store, 'runs/a/adapter');
      },
    });
    expect(completeSeen).toBe(false);
    expect(await isComplete(store, 'runs/a/adapter')).toBe(true);
    const back = join(root, 'back');
    await getDir(store, 'runs/a/adapter', back);
    expect(readFileSync(join(back, 'd', 'b.json'), 'utf8')).toBe('{}');
    await store.delete('runs/a/adapter/_COMPLETE');
    await expect(getDir(store, 'runs/a/adapter', back)).rejects.toThrow(/is not complete/);
  });

  it('refuses keys that leave the store root', async () => {
    for (const bad of ['../x', 'runs/../../x', '/etc/passwd', 'a/./b']) {
      await expect(store.writeText(bad, 'x')).rejects.toThrow(/invalid store key/);
    }
  });

  it('opens stores and runs by URI', () => {
    expect(openStore('s3://bucket/prefix/')).toBeInstanceOf(S3Store);
    expect((openStore('s3://bucket/prefix/') as S3Store).uri).toBe('s3://bucket/prefix');
    expect(openStore(`file://${root}`).uri).toBe(store.uri);
    expect(openRun('s3://bucket/p/runs/r-1').runId).toBe('r-1');
    expect(openRun('s3://bucket/p/runs/r-1').store.uri).toBe('s3://bucket/p');
    expect(openRun('runs/abc').store.uri).toBe(new FileStore('.').uri);
    for (const bad of ['s3://bucket/p/r-1', 's3://bucket/runs/a.b', './x/runs/'])
      expect(() => openRun(bad)).toThrow(/is not a run URI/);
  });
});

it('every example run config is valid', () => {
  const dir = new URL('../../examples/', import.meta.url).pathname;
  const configs = readdirSync(dir).filter(
    (f) => f.endsWith('.json') && 'model' in JSON.parse(readFileSync(join(dir, f), 'utf8')),
  );
  expect(configs.sort()).toEqual(['compare-adapters.json', 'retrain-from-previous.json', 'run-tiny.json']);
  for (const f of configs)
    expect(() => parseRunConfig(JSON.parse(readFileSync(join(dir, f), 'utf8')), f)).not.toThrow();
});
