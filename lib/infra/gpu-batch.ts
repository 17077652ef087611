/**
 * GPU compute for the pipeline's Batch jobs: a VPC whose instances sit in private subnets (an S3 gateway
 * endpoint keeps artifact traffic off the NAT gateway), two managed EC2 compute environments on the ECS
 * GPU-optimized Amazon Linux 2023 AMI — spot first, on-demand as the fallback — ordered in one job queue, and a
 * queue rule that cancels a job stuck RUNNABLE at the head of the queue (the symptom of capacity that never
 * comes, aws-pipeline-notes.md §1).
 */
import { Duration, RemovalPolicy, Size } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { acknowledge } from './nag.ts';
import { Construct } from 'constructs';
import { gpuInstanceType } from './gpu-instance-types.ts';

export interface GpuBatchProps {
  /** GPU instance types (each must be in GPU_INSTANCE_TYPES; the stack options check this). */
  readonly instanceTypes: readonly string[];
  /** A spot environment at order 1 with on-demand at order 2; false: on-demand only. @default true */
  readonly spot?: boolean;
  /** Most vCPUs each compute environment runs at once. */
  readonly maxVcpus: number;
  /** Cancel a job that has been RUNNABLE at the head of the queue this long (10 min – 24 h). */
  readonly runnableTimeout: Duration;
  /** Root volume of each instance: base model, data and checkpoints pass through it. @default 200 GiB */
  readonly rootVolumeSize?: Size;
  /** Put the compute in this VPC (it needs private subnets with egress). @default - a new VPC with one NAT gateway */
  readonly vpc?: ec2.IVpc;
  /** Retention of the VPC flow log (rejected traffic). @default ONE_MONTH */
  readonly flowLogRetention?: logs.RetentionDays;
}

export class GpuBatch extends Construct {
  public readonly vpc: ec2.IVpc;
  /** The spot environment (order 1), absent when spot is off. */
  public readonly spotEnvironment?: batch.ManagedEc2EcsComputeEnvironment;
  /** The on-demand environment (order 2 behind spot, or the only one). */
  public readonly onDemandEnvironment: batch.ManagedEc2EcsComputeEnvironment;
  public readonly jobQueue: batch.JobQueue;

  constructor(scope: Construct, id: string, props: GpuBatchProps) {
    super(scope, id);
    const runnableMinutes = props.runnableTimeout.toMinutes();
    if (runnableMinutes < 10 || runnableMinutes > 1440) {
      throw new Error(
        `GpuBatch: runnableTimeout must be 10 minutes to 24 hours (Batch's limits), got ${runnableMinutes} min`,
      );
    }
    for (const name of props.instanceTypes) gpuInstanceType(name);

    // Network: private subnets for the instances; S3 through a gateway endpoint (free, and off the NAT).
    if (props.vpc) {
      this.vpc = props.vpc;
    } else {
      const vpc = new ec2.Vpc(this, 'Vpc', {
        maxAzs: 3, // more AZs, more GPU capacity pools for spot
        natGateways: 1, // ECR, CloudWatch and model downloads; one is enough for batch work
        subnetConfiguration: [
          { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
          { name: 'compute', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
        ],
        gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      });
      vpc.addFlowLog('RejectedTraffic', {
        trafficType: ec2.FlowLogTrafficType.REJECT,
        destination: ec2.FlowLogDestination.toCloudWatchLogs(
          new logs.LogGroup(this, 'FlowLog', {
            retention: props.flowLogRetention ?? logs.RetentionDays.ONE_MONTH,
            removalPolicy: RemovalPolicy.DESTROY,
          }),
        ),
      });
      this.vpc = vpc;
    }

    // Instances: IMDSv2 only, and an encrypted gp3 root volume large enough for a model and its checkpoints.
    const launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      requireImdsv2: true,
      blockDevices: [
        {
          deviceName: '/dev/xvda', // the root device of the ECS AL2023 AMIs
          volume: ec2.BlockDeviceVolume.ebs((props.rootVolumeSize ?? Size.gibibytes(200)).toGibibytes(), {
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            encrypted: true,
            deleteOnTermination: true,
          }),
        },
      ],
    });

    const environment = (envId: string, spot: boolean) =>
      new batch.ManagedEc2EcsComputeEnvironment(this, envId, {
        vpc: this.vpc,
        vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
        instanceTypes: props.instanceTypes.map((name) => new ec2.InstanceType(name)),
        // Without this CDK adds the "optimal" class, i.e. CPU-only C4/M4/R4 instances.
        useOptimalInstanceClasses: false,
        // CDK's GPU default is still AL2; AL2023 is the supported one (and needs no p3/g3, which it lacks).
        images: [{ imageType: batch.EcsMachineImageType.ECS_AL2023_NVIDIA }],
        minvCpus: 0, // nothing runs, nothing is paid for
        maxvCpus: props.maxVcpus,
        spot,
        allocationStrategy: spot
          ? batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED
          : batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
        launchTemplate,
        // Leave the name to CloudFormation so that changing instance types can replace the environment.
        replaceComputeEnvironment: true,
      });

    const spot = props.spot ?? true;
    this.spotEnvironment = spot ? environment('SpotEnvironment', true) : undefined;
    this.onDemandEnvironment = environment('OnDemandEnvironment', false);
    const computeEnvironments: batch.OrderedComputeEnvironment[] = [];
    if (this.spotEnvironment)
      computeEnvironments.push({ computeEnvironment: this.spotEnvironment, order: 1 });
    computeEnvironments.push({ computeEnvironment: this.onDemandEnvironment, order: spot ? 2 : 1 });

    this.jobQueue = new batch.JobQueue(this, 'JobQueue', {
      computeEnvironments,
      priority: 1,
      jobStateTimeLimitActions: [
        batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY,
        batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
        batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
      ].map((reason) => ({
        action: batch.JobStateTimeLimitActionsAction.CANCEL,
        state: batch.JobStateTimeLimitActionsState.RUNNABLE,
        maxTime: props.runnableTimeout,
        reason,
      })),
    });

    acknowledge(
      this,
      'The ECS container instance role needs AmazonEC2ContainerServiceforEC2Role (register with ECS, pull images, ' +
        'write logs); AWS maintains it as the policy for Batch ECS instances.',
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role]',
    );
  }
}
