/**
 * Operations: an SNS topic (optionally with an e-mail subscription) that hears about executions that failed,
 * timed out or were aborted, and about upload events that ended in the trigger's dead-letter queue.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export interface PipelineAlarmsProps {
  readonly stateMachine: sfn.IStateMachine;
  /** The upload trigger's dead-letter queue. @default - no alarm on it */
  readonly deadLetterQueue?: sqs.IQueue;
  /** Subscribe this address to the topic (AWS e-mails a confirmation link first). @default - no subscription */
  readonly email?: string;
}

export class PipelineAlarms extends Construct {
  public readonly topic: sns.Topic;
  /** Fires when an execution fails, times out or is aborted. */
  public readonly failedExecutions: cloudwatch.Alarm;
  public readonly deadLetters?: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: PipelineAlarmsProps) {
    super(scope, id);
    // Encrypted with a key CloudWatch alarms may use (the AWS-managed SNS key does not allow them).
    const key = new kms.Key(this, 'TopicKey', {
      enableKeyRotation: true,
      description: 'moka pipeline alarms topic',
      removalPolicy: RemovalPolicy.DESTROY, // it protects only alarm notifications: scheduled for deletion with the stack
    });
    key.grant(new iam.ServicePrincipal('cloudwatch.amazonaws.com'), 'kms:Decrypt', 'kms:GenerateDataKey*');
    this.topic = new sns.Topic(this, 'Topic', {
      displayName: 'moka pipeline alarms',
      masterKey: key,
      enforceSSL: true,
    });
    if (props.email) this.topic.addSubscription(new subscriptions.EmailSubscription(props.email));

    const period = Duration.minutes(5);
    const failed = new cloudwatch.MathExpression({
      label: 'executions failed, timed out or aborted',
      expression: 'failed + timedOut + aborted',
      usingMetrics: {
        failed: props.stateMachine.metricFailed({ period, statistic: 'Sum' }),
        timedOut: props.stateMachine.metricTimedOut({ period, statistic: 'Sum' }),
        aborted: props.stateMachine.metricAborted({ period, statistic: 'Sum' }),
      },
      period,
    });
    this.failedExecutions = failed.createAlarm(this, 'FailedExecutions', {
      alarmDescription:
        'A moka pipeline execution failed, timed out or was aborted: see the execution in the Step Functions console',
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.failedExecutions.addAlarmAction(new actions.SnsAction(this.topic));

    if (props.deadLetterQueue) {
      this.deadLetters = props.deadLetterQueue
        .metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' })
        .createAlarm(this, 'UploadDeadLetters', {
          alarmDescription:
            'An upload event could not start a run after retries: see the start-on-upload logs and the dead-letter queue',
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        });
      this.deadLetters.addAlarmAction(new actions.SnsAction(this.topic));
    }
  }
}
