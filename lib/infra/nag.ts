/**
 * cdk-nag (v3) findings acknowledged through CDK's own validation API: each finding is acknowledged one by one,
 * by its full id (`AwsSolutions-IAM5[Resource::<…>/runs/*]`), always with the reason it is acceptable here.
 */
import { Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/** Acknowledges the listed cdk-nag findings on `scope` (and the resources under it), with `reason`. */
export function acknowledge(scope: IConstruct, reason: string, ...ids: string[]): void {
  for (const id of ids) Validations.of(scope).acknowledge({ id, reason });
}
