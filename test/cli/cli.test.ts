// The `moka` executable as a user runs it: help, unknown commands, and a working subcommand.
import { describe, expect, it } from 'vitest';
import { runMoka } from '../helpers/run-moka.ts';

describe('moka CLI', () => {
  it('--help lists the commands and exits 0', () => {
    const r = runMoka(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: moka');
    expect(r.stdout).toContain('doctor');
    // It describes what exists: every command its description and example name is a command.
    const commands = [...r.stdout.matchAll(/^ {2}([a-z][a-z-]+) \[/gm)].map((m) => m[1]);
    for (const verb of ['quantize', 'train', 'generate', 'score', 'merge', 'init-tiny', 'eval', 'report']) {
      expect(r.stdout).toContain(verb);
      expect(commands).toContain(verb);
    }
    expect(r.stdout).toMatch(/it generates gibberish; give --model a real Hugging Face LLaMA-family/);
    expect(r.stdout).toContain('moka init-tiny --out scratch/tiny');
  });

  it('an unknown command exits non-zero with a one-line message', () => {
    const r = runMoka(['nosuchcommand']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')[0]).toMatch(/unknown command 'nosuchcommand'/);
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/);
  });

  it('doctor --json reports the CPU provider as bundled and the native kernels as loaded', () => {
    const r = runMoka(['doctor', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.providers).toContainEqual({ name: 'cpu', bundled: true });
    expect(report.nativeKernels).toBe('loaded'); // npm test builds them first
    // The installed ONNX Runtime's session options pass the check that finds the planner's reuse switch
    // (native/memory-settings.cc): when an upgrade moves it, this fails instead of training quietly taking
    // ~500 MB more.
    expect(report.nativeMemory).toEqual({ memReuseOff: true });
    const human = runMoka(['doctor']);
    expect(human.stdout).toMatch(/^memory +ORT planner buffer reuse off$/m);
  });

  it('doctor says why the native kernels are not used when they are turned off', () => {
    const r = runMoka(['doctor'], { env: { MOKA_NATIVE_KERNELS: '0' } });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^native +turned off by MOKA_NATIVE_KERNELS=0$/m);
  });
});
