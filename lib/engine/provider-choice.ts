/**
 * Which execution provider a process should use, and why: the decision the GPU task image logs (as one JSON
 * line) when a stage starts, so a run on a GPU instance that silently fell back to the CPU is visible at once.
 *
 * `auto` resolves to CUDA only when both halves are there: a GPU the process can see (`/dev/nvidia<N>`, which the
 * NVIDIA container runtime creates for each GPU Batch assigned to the job) and onnxruntime-node's CUDA provider
 * library (installed only by the GPU opt-in, README "ONNX Runtime and GPUs"). Otherwise it resolves to the CPU,
 * with the missing half as the reason. An explicit choice is kept, with a warning when it cannot work here.
 */
import { readdirSync } from 'node:fs';
import type { ProviderChoice, ProviderName } from './session.ts';
import { cudaProviderInstalled } from './session.ts';

/** What the process can see of the machine's GPUs. */
export interface GpuProbe {
  /** GPU device files visible to the process (e.g. `/dev/nvidia0`). */
  readonly gpuDevices: readonly string[];
  /** onnxruntime-node's CUDA provider library is installed beside its CPU runtime. */
  readonly cudaProviderInstalled: boolean;
}

/** The provider decision, shaped for a structured log line. */
export interface ProviderDecision {
  /** The provider the sessions should be created with. */
  readonly provider: ProviderName;
  /** What the run config (or flag) asked for. */
  readonly requested: ProviderChoice;
  /** Why this provider, in a sentence. */
  readonly reason: string;
  /** Set when the explicit choice cannot work on this machine (the session will fail with instructions). */
  readonly warning?: string;
  readonly gpuDevices: readonly string[];
  readonly cudaProviderInstalled: boolean;
}

/**
 * Resolves a provider choice against what the machine offers. Pure: the probe is an argument.
 *
 * - `auto` + a visible GPU + the CUDA provider → `cuda`;
 * - `auto` otherwise → `cpu`, the reason naming what is missing;
 * - `cpu`, `cuda`, `webgpu` → kept; `cuda` without a GPU or the provider carries a `warning`, as does `cpu` on a
 *   machine where CUDA would work (a GPU paid for and not used).
 */
export function chooseExecutionProvider(requested: ProviderChoice, probe: GpuProbe): ProviderDecision {
  const gpus = probe.gpuDevices.length;
  const base = {
    requested,
    gpuDevices: probe.gpuDevices,
    cudaProviderInstalled: probe.cudaProviderInstalled,
  };
  const cudaUsable = gpus > 0 && probe.cudaProviderInstalled;
  const missing =
    gpus === 0 && !probe.cudaProviderInstalled
      ? 'no GPU is visible and the CUDA provider is not installed'
      : gpus === 0
        ? 'the CUDA provider is installed but no GPU is visible (/dev/nvidia<N>; the job reserved none, or the NVIDIA runtime is missing)'
        : `${gpus} GPU(s) are visible but onnxruntime-node's CUDA provider is not installed (install with ONNXRUNTIME_NODE_INSTALL=cuda12)`;
  switch (requested) {
    case 'auto':
      return cudaUsable
        ? {
            ...base,
            provider: 'cuda',
            reason: `auto: ${gpus} GPU(s) visible and the CUDA provider installed`,
          }
        : { ...base, provider: 'cpu', reason: `auto: ${missing}` };
    case 'cuda':
      return cudaUsable
        ? {
            ...base,
            provider: 'cuda',
            reason: `requested cuda; ${gpus} GPU(s) visible and the CUDA provider installed`,
          }
        : {
            ...base,
            provider: 'cuda',
            reason: 'requested cuda',
            warning: `cuda cannot start here: ${missing}`,
          };
    case 'cpu':
      return cudaUsable
        ? {
            ...base,
            provider: 'cpu',
            reason: 'requested cpu',
            warning: `${gpus} GPU(s) and the CUDA provider are available but unused; set compute.provider to "auto" or "cuda"`,
          }
        : { ...base, provider: 'cpu', reason: 'requested cpu' };
    case 'webgpu':
      return { ...base, provider: 'webgpu', reason: 'requested webgpu (needs a Vulkan driver)' };
  }
}

/** The GPU device files under `dir` (`nvidia0`, `nvidia1`, …; not `nvidiactl` or `nvidia-uvm`). */
export function listNvidiaDevices(dir = '/dev'): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => /^nvidia\d+$/.test(n))
    .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)))
    .map((n) => `${dir}/${n}`);
}

/** Probes this process's machine. */
export function probeGpus(): GpuProbe {
  return { gpuDevices: listNvidiaDevices(), cudaProviderInstalled: cudaProviderInstalled() };
}
