/**
 * The CDK app (`npx cdk synth` / `cdk deploy`, wired through cdk.json).
 * The pipeline stacks (artifact bucket, GPU Batch, state machine, retrain trigger) are added by the AWS issue;
 * until then the app synthesizes no stacks and says so.
 */
import { App } from 'aws-cdk-lib';

const app = new App();
if (app.node.children.length === 0) {
  process.stderr.write('moka: the CDK app defines no stacks yet (the AWS pipeline is not built yet).\n');
}
app.synth();
