/**
 * The bucket every run's artifacts live in (`runs/<runId>/…`), the uploads that start runs, and the retraining
 * templates. A new bucket gets: encryption (S3-managed, or a customer-managed KMS key), versioning, the
 * public-access block, a TLS-only policy, EventBridge notifications (the retrain trigger listens there), and
 * lifecycle rules that expire old checkpoints, non-current versions and abandoned multipart uploads.
 * An existing bucket is used as it is: the stack cannot change its settings, and docs/deploy.md says which to set.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { acknowledge } from './nag.ts';
import { Construct } from 'constructs';
import { RUNS_PREFIX } from './stack-options.ts';

export interface ArtifactBucketProps {
  /** Use this bucket instead of creating one; its settings are left as they are. @default - a new bucket */
  readonly existingBucket?: s3.IBucket;
  /** Encrypt the new bucket with a new customer-managed KMS key (rotated yearly). @default false (S3-managed keys) */
  readonly kms?: boolean;
  /** Days after which checkpoints (`runs/<runId>/variants/<name>/checkpoints/`) and non-current versions expire. @default 30 */
  readonly checkpointExpirationDays?: number;
  /** What `cdk destroy` does with the new bucket. @default RemovalPolicy.RETAIN (artifacts outlive the stack) */
  readonly removalPolicy?: RemovalPolicy;
}

export class ArtifactBucket extends Construct {
  /** The artifact bucket (new or borrowed). */
  public readonly bucket: s3.IBucket;
  /** The bucket's KMS key, when it was created with one. */
  public readonly encryptionKey?: kms.IKey;
  /** True when the bucket was created (and configured) by this construct. */
  public readonly created: boolean;

  constructor(scope: Construct, id: string, props: ArtifactBucketProps = {}) {
    super(scope, id);
    if (props.existingBucket) {
      if (props.kms) throw new Error('ArtifactBucket: kms applies to a new bucket only; omit it with existingBucket');
      this.bucket = props.existingBucket;
      this.created = false;
      return;
    }
    const days = props.checkpointExpirationDays ?? 30;
    const key = props.kms
      ? new kms.Key(this, 'Key', { enableKeyRotation: true, description: 'moka artifact bucket' })
      : undefined;
    const bucket = new s3.Bucket(this, 'Bucket', {
      encryption: key ? s3.BucketEncryption.KMS : s3.BucketEncryption.S3_MANAGED,
      encryptionKey: key,
      bucketKeyEnabled: key !== undefined,
      versioned: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      eventBridgeEnabled: true,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      lifecycleRules: [
        // A crashed upload leaves parts that are billed but invisible.
        { id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
        // Checkpoints exist to resume a run; once it is done the adapter is what matters. A single rule with a
        // prefix cannot name `runs/*/variants/*/checkpoints/`, so checkpoints carry the object tag the stage
        // writes (`moka:kind=checkpoint`); untagged checkpoint files fall under the non-current rule only.
        {
          id: 'expire-old-checkpoints',
          prefix: RUNS_PREFIX,
          tagFilters: { 'moka:kind': 'checkpoint' },
          expiration: Duration.days(days),
        },
        // Overwritten and deleted objects stay recoverable for a while, then go.
        { id: 'expire-noncurrent-versions', noncurrentVersionExpiration: Duration.days(days) },
      ],
    });
    acknowledge(
      bucket,
      'Server access logs would need a second bucket per deployment; CloudTrail data events can be enabled ' +
        'account-wide instead (docs/deploy.md).',
      'AwsSolutions-S1',
    );
    this.bucket = bucket;
    this.encryptionKey = key;
    this.created = true;
  }
}
