/**
 * The Amazon States Language definition of a synthesized stack's state machine, with the CloudFormation
 * intrinsics of its DefinitionString resolved to placeholders, so that it can be validated (asl-validator) and
 * executed locally (aws-local-stepfunctions). CDK renders the definition as
 * `{"Fn::Join": ["", [json fragments, {"Ref": …}, {"Fn::GetAtt": […]}, …]]}` (aws-pipeline-notes.md §9):
 *
 * - `Ref` of a pseudo-parameter → its value for the stack's env (AWS::Partition → aws, …);
 * - `Ref` of a resource → a placeholder ARN naming the logical id (`arn:aws:…:placeholder:<LogicalId>`);
 * - `Fn::GetAtt [X, Arn]` (or another ARN attribute, e.g. a job queue's `JobQueueArn`) → the same placeholder ARN;
 *   other attributes → `<LogicalId>.<Attr>`;
 * - `Fn::Join`, `Fn::Sub` (plain `${…}` references), `Fn::Select` are evaluated.
 *
 * A placeholder keeps the resource's type in the ARN's service field where it is known (lambda, batch), so
 * `checkArn` validation passes and the local runner can tell a function from a job definition.
 */
import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';

type Json = unknown;

const SERVICE_OF_TYPE: Record<string, string> = {
  'AWS::Lambda::Function': 'lambda',
  'AWS::Batch::JobQueue': 'batch',
  'AWS::Batch::JobDefinition': 'batch',
  'AWS::StepFunctions::StateMachine': 'states',
  'AWS::IAM::Role': 'iam',
};

/** The account and region placeholder ARNs use where a stack's own are unresolved (and the local stacks' env). */
export const PLACEHOLDER_ENV = { account: '123456789012', region: 'us-east-1' };

/** The stack's account and region, each PLACEHOLDER_ENV's where the stack leaves it an unresolved token. */
export function placeholderEnv(stack: Stack): { account: string; region: string } {
  const known = (v: string) => (v && !v.startsWith('${') ? v : undefined);
  return {
    account: known(stack.account) ?? PLACEHOLDER_ENV.account,
    region: known(stack.region) ?? PLACEHOLDER_ENV.region,
  };
}

/** The state machine's ASL as a plain object. Throws when the stack holds no state machine or several. */
export function extractStateMachineDefinition(stack: Stack): Record<string, unknown> {
  const template = Template.fromStack(stack).toJSON() as {
    Resources: Record<string, { Type: string; Properties?: Record<string, Json> }>;
  };
  const machines = Object.entries(template.Resources).filter(
    ([, r]) => r.Type === 'AWS::StepFunctions::StateMachine',
  );
  if (machines.length !== 1) {
    throw new Error(
      `extractStateMachineDefinition: expected one state machine in ${stack.stackName}, found ${machines.length}`,
    );
  }
  const resolved = resolveIntrinsics(
    machines[0]![1].Properties!.DefinitionString,
    template.Resources,
    placeholderEnv(stack),
  );
  if (typeof resolved !== 'string')
    throw new Error('extractStateMachineDefinition: DefinitionString did not resolve to a string');
  return JSON.parse(resolved) as Record<string, unknown>;
}

function placeholderArn(
  logicalId: string,
  type: string | undefined,
  env: { account: string; region: string },
): string {
  const service = (type && SERVICE_OF_TYPE[type]) ?? 'placeholder';
  if (service === 'lambda') return `arn:aws:lambda:${env.region}:${env.account}:function:${logicalId}`;
  if (type === 'AWS::Batch::JobQueue')
    return `arn:aws:batch:${env.region}:${env.account}:job-queue/${logicalId}`;
  if (type === 'AWS::Batch::JobDefinition')
    return `arn:aws:batch:${env.region}:${env.account}:job-definition/${logicalId}:1`;
  return `arn:aws:${service}:${env.region}:${env.account}:${logicalId}`;
}

/** Evaluates the intrinsics this module supports (see the module comment); anything else is an error. */
export function resolveIntrinsics(
  value: Json,
  resources: Record<string, { Type: string }>,
  env: { account: string; region: string },
): Json {
  const pseudo: Record<string, string> = {
    'AWS::Partition': 'aws',
    'AWS::Region': env.region,
    'AWS::AccountId': env.account,
    'AWS::URLSuffix': 'amazonaws.com',
    'AWS::StackName': 'LocalStack',
    'AWS::NoValue': '',
  };
  const ref = (name: string): string => pseudo[name] ?? placeholderArn(name, resources[name]?.Type, env);
  const go = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(go);
    if (v === null || typeof v !== 'object') return v;
    const obj = v as Record<string, Json>;
    const keys = Object.keys(obj);
    if (keys.length === 1) {
      const [k] = keys as [string];
      const arg = obj[k];
      if (k === 'Ref') return ref(arg as string);
      if (k === 'Fn::GetAtt') {
        const [id, attr] = (typeof arg === 'string' ? arg.split('.') : arg) as [string, string];
        return attr.endsWith('Arn') ? placeholderArn(id, resources[id]?.Type, env) : `${id}.${attr}`;
      }
      if (k === 'Fn::Join') {
        const [sep, parts] = arg as [string, Json[]];
        return (go(parts) as Json[]).map(String).join(sep);
      }
      if (k === 'Fn::Select') {
        const [i, list] = arg as [number, Json];
        return (go(list) as Json[])[Number(i)];
      }
      if (k === 'Fn::Sub') {
        const [text, vars] = (typeof arg === 'string' ? [arg, {}] : arg) as [string, Record<string, Json>];
        return text.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
          if (name in vars) return String(go(vars[name]));
          const [id, attr] = name.split('.');
          return attr
            ? attr.endsWith('Arn')
              ? placeholderArn(id!, resources[id!]?.Type, env)
              : name
            : ref(name);
        });
      }
      if (k.startsWith('Fn::')) throw new Error(`resolveIntrinsics: ${k} is not supported`);
    }
    return Object.fromEntries(keys.map((key) => [key, go(obj[key])]));
  };
  return go(value);
}
