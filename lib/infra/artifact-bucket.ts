/**
 * The bucket every run's artifacts live in (`runs/<runId>/…`), the uploads that start runs, and the retraining
 * templates. A new bucket gets: encryption (S3-managed, or a customer-managed KMS key), versioning, the
 * public-access block, a TLS-only policy, EventBridge notifications (the retrain trigger listens there), and
 * lifecycle rules that expire old checkpoints and abandoned multipart uploads.
 *
 * Old checkpoints: the train stage keeps the newest `keepCheckpoints` checkpoints of a run and deletes older ones
 * as it goes; in a versioned bucket a deleted object stays as a non-current version, so these are what the
 * lifecycle rule expires (with any other overwritten or deleted object), after a grace period in which a
 * mistaken delete can still be undone. (A prefix rule cannot name `runs/*\/variants/*\/checkpoints/`: S3
 * lifecycle filters take a literal prefix.)
 * An existing bucket is used as it is: the stack cannot change its settings, and docs/deploy.md says which to set.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { acknowledge } from './nag.ts';
import { Construct } from 'constructs';

export interface ArtifactBucketProps {
  /** Use this bucket instead of creating one; its settings are left as they are. @default - a new bucket */
  readonly existingBucket?: s3.IBucket;
  /** Encrypt the new bucket with a new customer-managed KMS key (rotated yearly). @default false (S3-managed keys) */
  readonly kms?: boolean;
  /** Days after which non-current versions (old checkpoints the stages deleted, overwritten files) expire. @default 7 */
  readonly oldVersionExpirationDays?: number;
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
      if (props.kms)
        throw new Error('ArtifactBucket: kms applies to a new bucket only; omit it with existingBucket');
      this.bucket = props.existingBucket;
      this.created = false;
      return;
    }
    const days = props.oldVersionExpirationDays ?? 7;
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
        // Deleted checkpoints and overwritten files (non-current versions), and the delete markers left after.
        {
          id: 'expire-old-checkpoints-and-versions',
          noncurrentVersionExpiration: Duration.days(days),
          expiredObjectDeleteMarker: true,
        },
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
