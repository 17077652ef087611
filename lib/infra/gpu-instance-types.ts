/**
 * What each GPU instance type offers (GPUs, vCPUs, memory), for synth-time checks of the Batch resources.
 *
 * AWS Batch accepts a compute environment whose instance types cannot hold a job's GPU, vCPU or memory
 * reservation, and the job then waits in RUNNABLE forever with no error (aws-pipeline-notes.md §1). The stack
 * therefore checks every job's reservation against this table when it is synthesized. GPU count does not follow
 * instance size (g5.16xlarge has 1 GPU, g5.12xlarge 4), so the table lists each type.
 *
 * Source: the EC2 instance-type pages for the accelerated-computing families; verify a type with
 * `aws ec2 describe-instance-types --instance-types g5.xlarge --query 'InstanceTypes[].[GpuInfo,VCpuInfo,MemoryInfo]'`.
 */
import { UserError } from '../errors.ts';

export interface GpuInstanceType {
  /** GPUs on the instance. */
  readonly gpus: number;
  /** vCPUs on the instance. */
  readonly vcpus: number;
  /** Instance memory in GiB. */
  readonly memoryGiB: number;
  /** The GPU model and its memory, for messages and docs. */
  readonly gpu: string;
}

const t = (gpus: number, vcpus: number, memoryGiB: number, gpu: string): GpuInstanceType => ({
  gpus,
  vcpus,
  memoryGiB,
  gpu,
});

/** The GPU instance types the stack knows, by name. ECS_AL2023_NVIDIA does not support p3 and g3, so they are absent. */
export const GPU_INSTANCE_TYPES: Readonly<Record<string, GpuInstanceType>> = {
  'g4dn.xlarge': t(1, 4, 16, 'T4 16 GB'),
  'g4dn.2xlarge': t(1, 8, 32, 'T4 16 GB'),
  'g4dn.4xlarge': t(1, 16, 64, 'T4 16 GB'),
  'g4dn.8xlarge': t(1, 32, 128, 'T4 16 GB'),
  'g4dn.16xlarge': t(1, 64, 256, 'T4 16 GB'),
  'g4dn.12xlarge': t(4, 48, 192, 'T4 16 GB'),
  'g4dn.metal': t(8, 96, 384, 'T4 16 GB'),
  'g5.xlarge': t(1, 4, 16, 'A10G 24 GB'),
  'g5.2xlarge': t(1, 8, 32, 'A10G 24 GB'),
  'g5.4xlarge': t(1, 16, 64, 'A10G 24 GB'),
  'g5.8xlarge': t(1, 32, 128, 'A10G 24 GB'),
  'g5.16xlarge': t(1, 64, 256, 'A10G 24 GB'),
  'g5.12xlarge': t(4, 48, 192, 'A10G 24 GB'),
  'g5.24xlarge': t(4, 96, 384, 'A10G 24 GB'),
  'g5.48xlarge': t(8, 192, 768, 'A10G 24 GB'),
  'g6.xlarge': t(1, 4, 16, 'L4 24 GB'),
  'g6.2xlarge': t(1, 8, 32, 'L4 24 GB'),
  'g6.4xlarge': t(1, 16, 64, 'L4 24 GB'),
  'g6.8xlarge': t(1, 32, 128, 'L4 24 GB'),
  'g6.16xlarge': t(1, 64, 256, 'L4 24 GB'),
  'g6.12xlarge': t(4, 48, 192, 'L4 24 GB'),
  'g6.24xlarge': t(4, 96, 384, 'L4 24 GB'),
  'g6.48xlarge': t(8, 192, 768, 'L4 24 GB'),
  'g6e.xlarge': t(1, 4, 32, 'L40S 48 GB'),
  'g6e.2xlarge': t(1, 8, 64, 'L40S 48 GB'),
  'g6e.4xlarge': t(1, 16, 128, 'L40S 48 GB'),
  'g6e.8xlarge': t(1, 32, 256, 'L40S 48 GB'),
  'g6e.16xlarge': t(1, 64, 512, 'L40S 48 GB'),
  'g6e.12xlarge': t(4, 48, 384, 'L40S 48 GB'),
  'g6e.24xlarge': t(4, 96, 768, 'L40S 48 GB'),
  'g6e.48xlarge': t(8, 192, 1536, 'L40S 48 GB'),
  'p4d.24xlarge': t(8, 96, 1152, 'A100 40 GB'),
  'p4de.24xlarge': t(8, 96, 1152, 'A100 80 GB'),
  'p5.48xlarge': t(8, 192, 2048, 'H100 80 GB'),
  'p5e.48xlarge': t(8, 192, 2048, 'H200 141 GB'),
  'p5en.48xlarge': t(8, 192, 2048, 'H200 141 GB'),
};

/**
 * Memory the ECS agent and the OS keep for themselves on an instance, in GiB: a job asking for the whole
 * instance memory never fits (a g5.xlarge has 16 GiB; ask for at most 14).
 */
export function reservedMemoryGiB(memoryGiB: number): number {
  return Math.max(2, Math.ceil(memoryGiB * 0.1));
}

/** The memory (GiB) a job may reserve on an instance type: its memory less what ECS keeps. */
export function usableMemoryGiB(type: GpuInstanceType): number {
  return type.memoryGiB - reservedMemoryGiB(type.memoryGiB);
}

/** Looks up a listed instance type; throws a UserError naming the known types when it is not one. */
export function gpuInstanceType(name: string): GpuInstanceType {
  const type = GPU_INSTANCE_TYPES[name];
  if (!type) {
    throw new UserError(
      `instance type "${name}" is not a GPU instance type this stack knows; use one of ` +
        `${Object.keys(GPU_INSTANCE_TYPES).join(', ')}`,
    );
  }
  return type;
}

/** A job's reservation: GPUs (0 for a CPU job), vCPUs and memory in GiB. */
export interface JobReservation {
  readonly gpus: number;
  readonly vcpus: number;
  readonly memoryGiB: number;
}

/**
 * The listed instance types that can hold a job's reservation (GPUs, vCPUs, and memory after what ECS keeps).
 * Throws a one-line UserError naming the reservation and every listed type when none can, which is the
 * condition that otherwise leaves the job RUNNABLE forever.
 */
export function typesThatFit(instanceTypes: readonly string[], job: JobReservation, what: string): string[] {
  const fit = instanceTypes.filter((name) => {
    const type = gpuInstanceType(name);
    return type.gpus >= job.gpus && type.vcpus >= job.vcpus && usableMemoryGiB(type) >= job.memoryGiB;
  });
  if (fit.length === 0) {
    const offers = instanceTypes
      .map((name) => {
        const type = gpuInstanceType(name);
        return `${name}: ${type.gpus} GPU, ${type.vcpus} vCPU, ${usableMemoryGiB(type)} GiB usable`;
      })
      .join('; ');
    throw new UserError(
      `${what} needs ${job.gpus} GPU, ${job.vcpus} vCPU and ${job.memoryGiB} GiB, which no listed instance ` +
        `type offers (${offers}); list a larger type in instanceTypes or lower the job's reservation`,
    );
  }
  return fit;
}
