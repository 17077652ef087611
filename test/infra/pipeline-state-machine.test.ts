import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import aslValidator from 'asl-validator';
import { describe, expect, it } from 'vitest';
import { extractStateMachineDefinition, resolveIntrinsics } from '../../lib/infra/asl.ts';
import { PipelineStack } from '../../lib/infra/pipeline-stack.ts';
import { taskStates } from '../../lib/pipeline/local-runner.ts';
import { BATCH_STATE_STAGES, STATE_NAMES } from '../../lib/pipeline/state-names.ts';

type State = Record<string, unknown>;

function synth(variantConcurrency?: number) {
  const app = new App();
  const stack = new PipelineStack(app, 'TestPipeline', variantConcurrency ? { variantConcurrency } : {});
  return { stack, template: Template.fromStack(stack), asl: extractStateMachineDefinition(stack) };
}

/** Every state of the definition, Map and Parallel bodies included. */
function allStates(def: State): Record<string, State> {
  const out: Record<string, State> = {};
  const walk = (d: State) => {
    for (const [name, s] of Object.entries(d.States as Record<string, State>)) {
      out[name] = s;
      const inner = (s.ItemProcessor ?? s.Iterator) as State | undefined;
      if (inner) walk(inner);
      for (const b of (s.Branches ?? []) as State[]) walk(b);
    }
  };
  walk(def);
  return out;
}

describe('PipelineStateMachine', () => {
  const { template, asl } = synth(3);
  const states = allStates(asl);

  it('synthesizes ASL that asl-validator accepts (ARNs and paths checked)', () => {
    const r = aslValidator(asl as never, { checkArn: true, checkPaths: true });
    expect(r.isValid, r.errorsText()).toBe(true);
    const text = JSON.stringify(asl);
    expect(text).not.toMatch(/JSONata|Fn::|"Ref"|"Arguments"|"Output"|"Assign"/);
    for (const s of Object.values(allStates(asl))) expect(s.QueryLanguage ?? 'JSONPath').toBe('JSONPath');
  });

  it('has the documented state names, each Task bound to a handler or a stage', () => {
    expect(asl.StartAt).toBe(STATE_NAMES.validate);
    for (const name of Object.values(STATE_NAMES)) expect(Object.keys(states)).toContain(name);
    const tasks = taskStates(asl)
      .map(([n]) => n)
      .sort();
    expect(tasks).toEqual(
      [
        STATE_NAMES.validate,
        STATE_NAMES.finalize,
        STATE_NAMES.recordFailure,
        ...Object.keys(BATCH_STATE_STAGES),
      ].sort(),
    );
    expect(states[STATE_NAMES.variantMap]!.MaxConcurrency).toBe(3);
    expect(states[STATE_NAMES.variantMap]!.ItemsPath).toBe('$.variants');
  });

  it('submits Batch jobs with .sync passing only the run URI and the variant, retrying only Batch API errors', () => {
    for (const name of Object.keys(BATCH_STATE_STAGES)) {
      const s = states[name]!;
      expect(s.Resource).toBe('arn:aws:states:::batch:submitJob.sync');
      const params = (s.Parameters as State).Parameters as State;
      expect(Object.keys(params).sort()).toEqual(
        name === STATE_NAMES.quantize || name === STATE_NAMES.report
          ? ['runUri.$']
          : ['runUri.$', name === STATE_NAMES.evaluateBase ? 'variant' : 'variant.$'].sort(),
      );
      const retried = ((s.Retry ?? []) as { ErrorEquals: string[] }[]).flatMap((r) => r.ErrorEquals);
      expect(retried.length).toBeGreaterThan(0);
      for (const e of retried) expect(e).toMatch(/^Batch\./);
    }
    expect(JSON.stringify(asl)).not.toContain('States.TaskFailed');
  });

  it('catches every failure into RecordFailure and fails with the stage error and cause', () => {
    for (const name of [
      STATE_NAMES.validate,
      STATE_NAMES.quantize,
      STATE_NAMES.variants,
      STATE_NAMES.report,
      STATE_NAMES.finalize,
    ]) {
      expect(states[name]!.Catch).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: STATE_NAMES.recordFailure },
      ]);
    }
    expect(states[STATE_NAMES.recordFailure]!.Next).toBe(STATE_NAMES.failed);
    expect(states[STATE_NAMES.failed]).toMatchObject({
      Type: 'Fail',
      ErrorPath: '$.error.Error',
      CausePath: '$.error.Cause',
    });
  });

  it('lets the state machine stop its Batch jobs (TerminateJob, DescribeJobs) and traces executions', () => {
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Action: 'batch:TerminateJob' }),
          Match.objectLike({ Action: 'batch:DescribeJobs', Resource: '*' }),
        ]),
      },
    });
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      TracingConfiguration: { Enabled: true },
    });
  });

  it('resolves the intrinsics CDK emits', () => {
    const resources = { Fn: { Type: 'AWS::Lambda::Function' }, Q: { Type: 'AWS::Batch::JobQueue' } };
    const env = { account: '111122223333', region: 'eu-west-1' };
    expect(
      resolveIntrinsics(
        { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':x:', { Ref: 'AWS::Region' }]] },
        resources,
        env,
      ),
    ).toBe('arn:aws:x:eu-west-1');
    expect(resolveIntrinsics({ 'Fn::GetAtt': ['Fn', 'Arn'] }, resources, env)).toBe(
      'arn:aws:lambda:eu-west-1:111122223333:function:Fn',
    );
    expect(resolveIntrinsics({ Ref: 'Q' }, resources, env)).toBe(
      'arn:aws:batch:eu-west-1:111122223333:job-queue/Q',
    );
    expect(resolveIntrinsics({ 'Fn::Sub': 'a-${AWS::AccountId}-${Fn.Arn}' }, resources, env)).toBe(
      'a-111122223333-arn:aws:lambda:eu-west-1:111122223333:function:Fn',
    );
    expect(() => resolveIntrinsics({ 'Fn::ImportValue': 'x' }, resources, env)).toThrow(/not supported/);
  });
});
