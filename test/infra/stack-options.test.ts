import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GPU_INSTANCE_TYPES, typesThatFit, usableMemoryGiB } from '../../lib/infra/gpu-instance-types.ts';
import { parseStackOptions } from '../../lib/infra/stack-options.ts';

const fail = (ctx: Record<string, unknown>) => {
  try {
    parseStackOptions(ctx);
  } catch (err) {
    expect((err as Error).name).toBe('UserError');
    expect((err as Error).message).not.toContain('\n');
    return (err as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(ctx)} to be rejected`);
};

describe('parseStackOptions', () => {
  it('defaults fit the smallest listed instance with the GPUs a job asks for', () => {
    const o = parseStackOptions({});
    expect(o.jobs.train).toMatchObject({ gpus: 1, vcpus: 4, memoryGiB: 14, sharedMemoryGiB: 7 });
    expect(o.jobs.report.gpus).toBe(0);
    expect(o).toMatchObject({
      spot: true,
      maxVcpus: 64,
      retryAttempts: 5,
      runsIncomingPrefix: 'runs-incoming/',
      datasetsPrefix: 'datasets/',
    });
    const four = parseStackOptions({ instanceTypes: 'g5.12xlarge,g6.12xlarge', gpusPerJob: '4' });
    expect(four.jobs.train).toMatchObject({ gpus: 4, vcpus: 48, memoryGiB: 192 - 20 });
  });

  it('accepts -c strings and cdk.json JSON values alike', () => {
    expect(parseStackOptions({ instanceTypes: ['g6e.xlarge'], spot: false, maxVcpus: 16 })).toMatchObject({
      instanceTypes: ['g6e.xlarge'],
      spot: false,
      maxVcpus: 16,
    });
    expect(parseStackOptions({ spot: 'false', maxVcpus: '16' })).toMatchObject({ spot: false, maxVcpus: 16 });
  });

  it('a GPU count no listed instance type offers is an error naming both', () => {
    const msg = fail({ instanceTypes: 'g5.xlarge,g5.16xlarge', gpusPerJob: '4' });
    expect(msg).toContain('gpusPerJob=4');
    expect(msg).toContain('g5.xlarge has 1');
    expect(msg).toContain('g5.16xlarge has 1'); // the biggest g5 below 12xlarge still has one GPU
  });

  it('a memory or vCPU reservation no listed type can hold is an error naming the types', () => {
    const msg = fail({ instanceTypes: 'g5.xlarge', jobMemoryGiB: '16' });
    expect(msg).toMatch(/needs 1 GPU, 4 vCPU and 16 GiB.*g5\.xlarge: 1 GPU, 4 vCPU, 14 GiB usable/);
    expect(fail({ instanceTypes: 'g5.xlarge', jobVcpus: '8' })).toContain('8 vCPU');
  });

  it('rejects unknown instance types, bad numbers, watched prefixes over runs/, and short execution timeouts', () => {
    expect(fail({ instanceTypes: 'm5.xlarge' })).toContain('"m5.xlarge" is not a known GPU instance type');
    expect(fail({ maxVcpus: '-1' })).toContain('maxVcpus');
    expect(fail({ runnableTimeoutMinutes: '5' })).toContain('from 10 to 1440');
    expect(fail({ datasetsPrefix: 'runs/' })).toContain('retrigger');
    expect(fail({ runsIncomingPrefix: 'inputs/' })).toContain('the pipeline writes under "inputs/"');
    expect(fail({ datasetsPrefix: 'cache/data/' })).toContain('the pipeline writes under "cache/"');
    expect(fail({ runsIncomingPrefix: 'incoming' })).toContain('ending with "/"');
    expect(fail({ runsIncomingPrefix: 'in/', datasetsPrefix: 'in/data/' })).toContain('overlap');
    expect(fail({ executionTimeoutMinutes: '600' })).toMatch(
      /shorter than the stages' worst case of \d+ minutes/,
    );
    expect(fail({ logRetentionDays: '10' })).toContain('CloudWatch accepts');
    expect(fail({ alarmEmail: 'nobody' })).toContain('e-mail');
    expect(fail({ maxVcpus: '2' })).toContain('at least');
  });
});

describe('GPU instance table', () => {
  it('knows GPU counts that do not follow instance size', () => {
    expect(GPU_INSTANCE_TYPES['g5.16xlarge']!.gpus).toBe(1);
    expect(GPU_INSTANCE_TYPES['g5.12xlarge']!.gpus).toBe(4);
    expect(GPU_INSTANCE_TYPES['g6e.12xlarge']!.gpus).toBe(4);
    expect(GPU_INSTANCE_TYPES['p4d.24xlarge']!.gpus).toBe(8);
    expect(usableMemoryGiB(GPU_INSTANCE_TYPES['g5.xlarge']!)).toBe(14);
    expect(typesThatFit(['g5.xlarge', 'g5.12xlarge'], { gpus: 2, vcpus: 8, memoryGiB: 64 }, 'job')).toEqual([
      'g5.12xlarge',
    ]);
  });
});

describe('bin/cdk-app.ts', () => {
  it('stops with one line naming the bad context value (before building anything)', () => {
    const app = fileURLToPath(new URL('../../bin/cdk-app.ts', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', app], {
      encoding: 'utf8',
      env: {
        ...process.env,
        CDK_CONTEXT_JSON: JSON.stringify({ gpusPerJob: '4', instanceTypes: 'g5.xlarge' }),
      },
    });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      'moka: error: context gpusPerJob=4 is more GPUs than any listed instance type offers (g5.xlarge has 1); ' +
        'lower gpusPerJob or add an instance type with 4 GPUs to instanceTypes',
    ]);
  });
});
