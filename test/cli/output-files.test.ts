// What the commands that write leave on disk when the output path is unusable, when they are interrupted by a
// signal, when an earlier run was SIGKILLed, and when they fail: one-line errors naming the path, and exact file
// listings afterwards (lib/output-cleanup.ts, lib/make-dirs.ts, userErrorFromFs in lib/errors.ts).
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportOnnx } from '../../lib/adapters/export-onnx.ts';
import { isUserError, userErrorFromFs, withFsPath } from '../../lib/errors.ts';
import { makeScratchDir } from '../../lib/output-cleanup.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { runMoka, startMoka } from '../helpers/run-moka.ts';
import { fixtureRun } from '../train/fixtures/setup.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-output-files-'));
const model = join(root, 'model');
/** Big enough (58 MB of float32) that writing it takes a moment a signal can land in. */
const SLOW_SIZES = [
  '--hidden',
  '384',
  '--intermediate',
  '1536',
  '--layers',
  '6',
  '--heads',
  '6',
  '--kv-heads',
  '6',
];
const slowModel = join(root, 'slow');
const slowQuantized = join(root, 'slow-nf4');
const DATA = join(root, 'data.jsonl');

beforeAll(async () => {
  await writeTinyCheckpoint({ dir: model, seed: 3 });
  await writeTinyCheckpoint({
    dir: slowModel,
    hiddenSize: 384,
    intermediateSize: 1536,
    numLayers: 6,
    numHeads: 6,
    numKvHeads: 6,
  });
  await quantizeCheckpoint({ modelDir: slowModel, outDir: slowQuantized, format: 'nf4' });
  writeFileSync(DATA, '{"instruction": "say hi", "output": "hi"}\n'.repeat(4));
  writeFileSync(join(root, 'a-file'), 'not a directory\n');
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The pid of a process that has exited (and been reaped): its temporary files are stale. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

describe('filesystem errors on output paths', () => {
  // Node's own recursive mkdir never returns under /proc; a bounded run shows the command no longer hangs.
  it.each([
    ['init-tiny', ['init-tiny', '--out', '/proc/moka-test/tiny'], '/proc/moka-test', 'ENOENT'],
    ['quantize', ['quantize', '--model', model, '--out', 'A_FILE/q'], 'A_FILE/q', 'ENOTDIR'],
    [
      'export-onnx',
      ['export-onnx', '--model', model, '--out', '/proc/moka-test/m.onnx'],
      '/proc/moka-test',
      'ENOENT',
    ],
    [
      'train',
      ['train', '--model', model, '--data', DATA, '--out', 'A_FILE/run', '--max-steps', '1'],
      'A_FILE',
      'ENOTDIR',
    ],
  ])('%s: one line naming the path and the problem', (_name, args, path, code) => {
    const file = join(root, 'a-file');
    const r = runMoka(
      args.map((a) => a.replace('A_FILE', file)),
      { timeoutMs: 30_000 },
    );
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^moka: error: cannot [a-z ]+ /);
    expect(lines[0]).toContain(path.replace('A_FILE', file));
    expect(lines[0]).toContain(`(${code})`);
    expect(r.stderr).not.toMatch(/internal error|please report/);
  });

  it('maps every errno a write can meet to a one-line UserError; writers attach the path', () => {
    const errno = (code: string, syscall: string, path?: string) =>
      Object.assign(new Error(`${code}: x`), { code, syscall, ...(path ? { path } : {}) });
    const cases: [Error, RegExp][] = [
      [
        errno('ENOSPC', 'write', '/data/out/model.safetensors.tmp-7'),
        /^cannot write \/data\/out\/model\.safetensors\.tmp-7: no space left on the device; free some space or choose another location \(ENOSPC\)$/,
      ],
      [errno('EACCES', 'open', '/srv/ro/x'), /^cannot open \/srv\/ro\/x: permission denied; .* \(EACCES\)$/],
      [
        errno('EROFS', 'mkdir', '/mnt/cd/out'),
        /^cannot create directory \/mnt\/cd\/out: the file system is read-only; .*\(EROFS\)$/,
      ],
      [errno('EEXIST', 'mkdir', '/a/b'), /^cannot create directory \/a\/b: it already exists; .*\(EEXIST\)$/],
      [errno('EDQUOT', 'write', '/home/u/x'), /disk quota is exceeded.*\(EDQUOT\)$/],
    ];
    for (const [err, message] of cases) {
      const u = userErrorFromFs(err);
      expect(u && isUserError(u)).toBe(true);
      expect(u!.message).toMatch(message);
    }
    // A write through a file handle reports no path; the writer adds the one it was writing.
    const noPath = errno('ENOSPC', 'write');
    expect(userErrorFromFs(withFsPath(noPath, '/out/x.tmp-1'))!.message).toMatch(
      /^cannot write \/out\/x\.tmp-1: /,
    );
    // Not filesystem errors: left alone (they stay internal errors).
    expect(userErrorFromFs(new RangeError('bad'))).toBeNull();
    expect(userErrorFromFs(errno('ECONNRESET', 'read'))).toBeNull();
  });
});

/** Starts moka, sends `signal` once `ready()` holds, and resolves with how the process ended. */
async function interruptWhen(
  args: string[],
  ready: () => boolean,
  signal: NodeJS.Signals,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; sent: boolean }> {
  const child: ChildProcess = startMoka(args);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, sig) => resolve({ code, signal: sig })),
  );
  let sent = false;
  let done = false;
  void exited.then(() => (done = true));
  while (!done) {
    if (ready()) {
      child.kill(signal);
      sent = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return { ...(await exited), stderr, sent };
}

const hasTemp = (dir: string) => () => existsSync(dir) && readdirSync(dir).some((e) => /\.tmp-\d+$/.test(e));

describe('interrupted commands leave nothing behind', () => {
  it('init-tiny on SIGINT: the directory it created is gone', async () => {
    const parent = join(root, 'sigint');
    mkdirSync(parent);
    const out = join(parent, 'tiny');
    const r = await interruptWhen(['init-tiny', '--out', out, ...SLOW_SIZES], hasTemp(out), 'SIGINT');
    expect(r.sent, r.stderr).toBe(true);
    expect(r.signal).toBe('SIGINT');
    expect(readdirSync(parent)).toEqual([]);
  });

  it('quantize on SIGTERM: no <out>.tmp-<pid> directory, no output', async () => {
    const parent = join(root, 'sigterm');
    mkdirSync(parent);
    const r = await interruptWhen(
      ['quantize', '--model', slowModel, '--out', join(parent, 'q')],
      hasTemp(parent),
      'SIGTERM',
    );
    expect(r.sent, r.stderr).toBe(true);
    expect(r.signal).toBe('SIGTERM');
    expect(readdirSync(parent)).toEqual([]);
  });

  it('dequantize on SIGHUP, replacing an earlier output: the earlier output is intact', async () => {
    const parent = join(root, 'sighup');
    const out = join(parent, 'deq');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'earlier.txt'), 'earlier\n');
    const r = await interruptWhen(
      ['dequantize', '--model', slowQuantized, '--out', out, '--force'],
      hasTemp(parent),
      'SIGHUP',
    );
    expect(r.sent, r.stderr).toBe(true);
    expect(r.signal).toBe('SIGHUP');
    expect(readdirSync(parent)).toEqual(['deq']);
    expect(readdirSync(out)).toEqual(['earlier.txt']);
  });
});

describe('failed commands leave nothing behind; a later run removes what a SIGKILL left', () => {
  it('init-tiny with an impossible size or config creates no directory', () => {
    const parent = join(root, 'impossible');
    mkdirSync(parent);
    const huge = runMoka([
      'init-tiny',
      '--out',
      join(parent, 'huge'),
      '--hidden',
      '100000',
      '--intermediate',
      '100000',
    ]);
    expect(huge.code).toBe(1);
    expect(huge.stderr).toMatch(
      /^moka: error: "model\.layers\.0\.self_attn\.q_proj\.weight" would have 10000000000 elements/,
    );
    expect(readdirSync(parent)).toEqual([]);
  });

  it('init-tiny --force, export-onnx and train remove stale temporary files of dead processes', async () => {
    const pid = deadPid();
    // init-tiny --force into a directory holding a killed run's temporary file (and a file of the user's).
    const tiny = join(root, 'stale-tiny');
    mkdirSync(tiny);
    writeFileSync(join(tiny, `model.safetensors.tmp-${pid}`), 'partial');
    writeFileSync(join(tiny, 'notes.txt'), 'mine');
    await writeTinyCheckpoint({ dir: tiny, force: true });
    expect(readdirSync(tiny).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'notes.txt',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);

    // export-onnx: `<name>.onnx.tmp-<pid>` and `<name>.weights.tmp-<pid>` beside the output; a live pid's stay.
    const onnxDir = join(root, 'stale-onnx');
    mkdirSync(onnxDir);
    writeFileSync(join(onnxDir, `m.onnx.tmp-${pid}`), 'partial');
    writeFileSync(join(onnxDir, `m.weights.tmp-${pid}`), 'partial');
    writeFileSync(join(onnxDir, `m.onnx.tmp-${process.ppid}`), 'another run in progress');
    await exportOnnx({ model, out: join(onnxDir, 'm.onnx'), seq: 8 });
    expect(readdirSync(onnxDir).sort()).toEqual(['m.onnx', `m.onnx.tmp-${process.ppid}`]);

    // train: leftovers anywhere in the run directory.
    const run = join(root, 'stale-run');
    mkdirSync(join(run, 'checkpoints', 'step-2'), { recursive: true });
    mkdirSync(join(run, 'adapter'));
    const stale = [
      join(run, `metrics.jsonl.tmp-${pid}`),
      join(run, 'checkpoints', 'step-2', `adapter.safetensors.tmp-${pid}`),
      join(run, 'adapter', `adapter_model.safetensors.tmp-${pid}`),
    ];
    for (const f of stale) writeFileSync(f, 'partial');
    await fixtureRun({
      outputDir: run,
      config: { maxSteps: 1, warmupSteps: 0, evalEvery: 0 },
      handleSignals: false,
    });
    for (const f of stale) expect(existsSync(f), f).toBe(false);
  });

  it('scratch directories in the OS temp directory (converted weights, merges for export) are swept the same way', () => {
    const pid = deadPid();
    const stale = join(tmpdir(), `moka-weights-${pid}-abcdef`);
    const live = join(tmpdir(), `moka-weights-${process.ppid}-ghijkl`);
    for (const d of [stale, live]) mkdirSync(join(d, 'sub'), { recursive: true });
    const scratch = makeScratchDir('moka-weights-');
    try {
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(live)).toBe(true);
      expect(scratch.dir).toMatch(new RegExp(`moka-weights-${process.pid}-\\w+$`));
    } finally {
      scratch.done();
      for (const d of [scratch.dir, live]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('train --resume with nothing to resume creates no run directory', () => {
    const out = join(root, 'never-run');
    const r = runMoka([
      'train',
      '--model',
      model,
      '--data',
      DATA,
      '--out',
      out,
      '--resume',
      '--max-steps',
      '1',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--resume: no complete checkpoint/);
    expect(existsSync(out)).toBe(false);
  });

  it('export-onnx refuses an existing --out (any file) without --force', async () => {
    const out = join(root, 'existing.onnx');
    writeFileSync(out, 'my notes, not a model');
    await expect(exportOnnx({ model, out, seq: 8 })).rejects.toThrow(
      /existing\.onnx already exists; choose another --out, or pass --force to replace it/,
    );
    expect(readdirSync(root).filter((e) => e.startsWith('existing'))).toEqual(['existing.onnx']);
    await exportOnnx({ model, out, seq: 8, force: true });
    expect(readdirSync(root).filter((e) => e.startsWith('existing'))).toEqual(['existing.onnx']);
  });
});
