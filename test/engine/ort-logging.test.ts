// ONNX Runtime prints its own log lines from native code, straight to stderr: an expected run-time error (an
// exception moka reports anyway) must not also print a red "[E:onnxruntime…]" line, and a normal run no warnings.
// Child processes, because those lines bypass the test runner's capture.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SCRIPT = `
import { Graph, Session, gather } from './lib/engine/index.ts';
const g = new Graph('faulty');
const idx = g.input('idx', 'int64', [1]);
const table = g.input('table', 'float32', [3, 2]);
const s = new Session(g, { inputs: [table, idx], outputs: { y: gather(table, idx) } }, { optimizedModelPath: process.argv[1] });
try {
  await s.run({ table: new Float32Array(6), idx: BigInt64Array.of(7n) });
} catch (err) {
  process.stdout.write(err.message.includes('out of data bounds') ? 'caught' : 'other');
}
await s.release();
`;

const OPTIMIZED = join(tmpdir(), `moka-ort-log-${process.pid}.onnx`);

function run(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', SCRIPT, OPTIMIZED], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    encoding: 'utf8',
    env: { ...process.env, MOKA_DEBUG: '', ...env },
  });
  rmSync(OPTIMIZED, { force: true });
  return r;
}

describe("ONNX Runtime's own log", () => {
  it('prints nothing for an error moka reports (the exception carries the message) nor for its warnings', () => {
    const r = run({});
    expect(r.stdout).toBe('caught');
    expect(r.stderr).toBe('');
  });

  it('MOKA_DEBUG brings its errors and warnings back', () => {
    const r = run({ MOKA_DEBUG: '1' });
    expect(r.stdout).toBe('caught');
    expect(r.stderr).toMatch(/\[E:onnxruntime:.*out of data bounds/);
  });
});
