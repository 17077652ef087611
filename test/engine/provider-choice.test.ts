import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chooseExecutionProvider, listNvidiaDevices } from '../../lib/engine/provider-choice.ts';

const gpu = { gpuDevices: ['/dev/nvidia0'], cudaProviderInstalled: true };
const noGpu = { gpuDevices: [], cudaProviderInstalled: true };
const noProvider = { gpuDevices: ['/dev/nvidia0', '/dev/nvidia1'], cudaProviderInstalled: false };
const nothing = { gpuDevices: [], cudaProviderInstalled: false };

describe('chooseExecutionProvider', () => {
  it('auto: CUDA when a GPU and the CUDA provider are both present, with the reason', () => {
    const d = chooseExecutionProvider('auto', gpu);
    expect(d).toMatchObject({
      provider: 'cuda',
      requested: 'auto',
      gpuDevices: ['/dev/nvidia0'],
      cudaProviderInstalled: true,
    });
    expect(d.reason).toBe('auto: 1 GPU(s) visible and the CUDA provider installed');
    expect(d.warning).toBeUndefined();
  });

  it('auto: CPU otherwise, the reason naming what is missing', () => {
    expect(chooseExecutionProvider('auto', noGpu)).toMatchObject({
      provider: 'cpu',
      reason: expect.stringContaining('no GPU is visible'),
    });
    expect(chooseExecutionProvider('auto', noProvider)).toMatchObject({
      provider: 'cpu',
      reason: expect.stringContaining(
        "2 GPU(s) are visible but onnxruntime-node's CUDA provider is not installed",
      ),
    });
    expect(chooseExecutionProvider('auto', nothing)).toMatchObject({
      provider: 'cpu',
      reason: 'auto: no GPU is visible and the CUDA provider is not installed',
    });
  });

  it('keeps an explicit choice, warning when it cannot work or leaves a GPU idle', () => {
    expect(chooseExecutionProvider('cuda', gpu).provider).toBe('cuda');
    expect(chooseExecutionProvider('cuda', gpu).warning).toBeUndefined();
    expect(chooseExecutionProvider('cuda', noGpu)).toMatchObject({
      provider: 'cuda',
      warning: expect.stringContaining('cannot start here'),
    });
    expect(chooseExecutionProvider('cpu', gpu)).toMatchObject({
      provider: 'cpu',
      warning: expect.stringContaining('unused'),
    });
    expect(chooseExecutionProvider('cpu', nothing)).toMatchObject({
      provider: 'cpu',
      reason: 'requested cpu',
    });
    expect(chooseExecutionProvider('cpu', nothing).warning).toBeUndefined();
    expect(chooseExecutionProvider('webgpu', nothing).provider).toBe('webgpu');
  });

  it('is JSON-serializable as one log record', () => {
    const line = JSON.stringify(chooseExecutionProvider('auto', gpu));
    expect(JSON.parse(line)).toEqual({
      provider: 'cuda',
      requested: 'auto',
      reason: 'auto: 1 GPU(s) visible and the CUDA provider installed',
      gpuDevices: ['/dev/nvidia0'],
      cudaProviderInstalled: true,
    });
  });
});

describe('listNvidiaDevices', () => {
  it('lists /dev/nvidia<N> GPU devices in order, not the control devices', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-dev-'));
    try {
      for (const n of ['nvidia10', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia0', 'null'])
        writeFileSync(join(dir, n), '');
      mkdirSync(join(dir, 'nvidia-caps'));
      expect(listNvidiaDevices(dir)).toEqual([`${dir}/nvidia0`, `${dir}/nvidia1`, `${dir}/nvidia10`]);
      expect(listNvidiaDevices(join(dir, 'absent'))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
