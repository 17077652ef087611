// `moka plan` as a user runs it, on the real LLaMA 2 7B / LLaMA 3 8B config.json fixtures.
import { describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturePath } from './fixtures.ts';
import { runMoka } from '../helpers/run-moka.ts';

describe('moka plan', () => {
  it('prints per-projection tables, the total and a comparison line (LLaMA 2 7B)', () => {
    const r = runMoka(['plan', '--config', fixturePath('llama-2-7b')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^q_proj\s+4096x4096\s+64x64 ⊗ 64x64\s+8,192\s+4,096$/m);
    expect(r.stdout).toMatch(/gate \(5 logits\)\s+5/);
    expect(r.stdout).toContain(
      'total    5,243,520 trainable parameters (5.24M): 163,860 per layer × 32 layers',
    );
    expect(r.stdout).toContain('compare  moka 5.24M · mokas 655.62k · krona 1.05M · lora 8.39M · dora 8.91M');
  });

  it('--json gives machine-readable totals for every adapter type (LLaMA 3 8B, --model DIR)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-plan-'));
    try {
      copyFileSync(fixturePath('llama-3-8b'), join(dir, 'config.json'));
      const r = runMoka(['plan', '--model', dir, '--adapter', 'mokas', '--targets', 'all-linear', '--json']);
      expect(r.stderr).toBe('');
      const report = JSON.parse(r.stdout);
      expect(report.model).toMatchObject({ numLayers: 32, baseParams: 8_030_261_248 });
      expect(report.adapter.type).toBe('mokas');
      expect(report.projections.map((p: { projection: string }) => p.projection)).toHaveLength(7);
      expect(report.targets).toHaveLength(32 * 7);
      expect(report.totals.trainableParams).toBe(
        report.projections.reduce((s: number, p: { totalParams: number }) => s + p.totalParams, 0),
      );
      const totals = Object.fromEntries(
        report.comparison.map((c: { type: string; totalParams: number }) => [c.type, c.totalParams]),
      );
      expect(totals).toEqual({
        moka: 11_306_080,
        mokas: 2_376_128,
        krona: 2_260_992,
        lora: 20_971_520,
        dora: 22_347_776,
      });
      expect(Object.keys(totals)).toEqual(['moka', 'mokas', 'krona', 'lora', 'dora']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reproduces PEFT's LoKr benchmark count and sizes LoRA to a budget", () => {
    const krona = runMoka([
      'plan',
      '--config',
      fixturePath('llama-3.2-3b'),
      '--adapter',
      'krona',
      '--targets',
      'q_proj,v_proj',
      '--r',
      '32',
      '--decompose-factor',
      '4',
    ]);
    expect(krona.stdout).toContain('total    2,294,656 trainable parameters');
    const lora = runMoka([
      'plan',
      '--config',
      fixturePath('llama-2-7b'),
      '--adapter',
      'lora',
      '--budget',
      '5M',
      '--layers',
      '0-15',
    ]);
    expect(lora.stdout).toMatch(/adapter {2}lora: r 9,/);
    expect(lora.stdout).toContain('in layers 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 of 32');
  });

  it('rejects bad input with one line naming the problem', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--targets', 'q_proj,query'], /unknown target module "query"; valid: q_proj, k_proj/],
      [['--layers', '0,40'], /layer 40 does not exist: this model has 32 layers, valid indices are 0-31/],
      [['--budget', '10k'], /budget 10k is too small for MoKA .* at least 1.05M/],
      [['--adapter', 'lokr'], /unknown adapter type; valid: moka, mokas, krona, lora, dora/],
      [['--adapter', 'krona', '--budget', '1M'], /--budget applies to moka, mokas, lora and dora/],
    ];
    for (const [args, message] of cases) {
      const r = runMoka(['plan', '--config', fixturePath('llama-2-7b'), ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
    const noModel = runMoka(['plan']);
    expect(noModel.code).toBe(1);
    expect(noModel.stderr).toContain('--model DIR');
  });
});
