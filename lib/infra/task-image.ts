/**
 * The GPU task image (`containers/Dockerfile`) as a Docker image asset: `cdk synth` only stages the build
 * context (the repository, filtered by `.dockerignore`), so synth needs no Docker engine; `cdk deploy` builds
 * the image (linux/amd64, the GPU instances' platform) and pushes it to the CDK bootstrap repository.
 */
import { IgnoreMode } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { Construct } from 'constructs';
import { REPO_ROOT } from './pipeline-function.ts';

export class TaskImage extends Construct {
  public readonly asset: ecrAssets.DockerImageAsset;
  public readonly image: ecs.ContainerImage;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.asset = new ecrAssets.DockerImageAsset(this, 'Asset', {
      directory: REPO_ROOT,
      file: 'containers/Dockerfile',
      platform: ecrAssets.Platform.LINUX_AMD64,
      // The .dockerignore at the repository root keeps the context to package files, lib/ and bin/.
      ignoreMode: IgnoreMode.DOCKER,
    });
    this.image = ecs.ContainerImage.fromDockerImageAsset(this.asset);
  }
}
