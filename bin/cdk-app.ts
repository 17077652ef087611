/**
 * The CDK app (`npx cdk synth` / `npx cdk deploy`, wired through cdk.json): the moka pipeline stack, configured
 * by context values (`-c instanceTypes=g5.xlarge,g6.xlarge`, or the "context" of cdk.json; docs/deploy.md lists
 * them). A bad value stops synth with one line naming the key, before anything is built.
 *
 * Synth needs no AWS credentials and no Docker: the stack is environment-agnostic unless CDK_DEFAULT_ACCOUNT /
 * CDK_DEFAULT_REGION (set by the CLI from a profile) are present, and the task image is built by `cdk deploy`.
 */
import { App, Validations } from 'aws-cdk-lib';
import cdkNag from 'cdk-nag';
import { isUserError } from '../lib/errors.ts';
import { MokaPipelineStack } from '../lib/infra/moka-pipeline-stack.ts';
import { parseStackOptions, readContext } from '../lib/infra/stack-options.ts';

const app = new App();
try {
  const options = parseStackOptions(readContext((key) => app.node.tryGetContext(key)));
  new MokaPipelineStack(app, options.stackName, {
    options,
    description: 'moka: fine-tuning pipeline (Step Functions + AWS Batch GPU + S3)',
    env:
      process.env.CDK_DEFAULT_ACCOUNT && process.env.CDK_DEFAULT_REGION
        ? { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION }
        : undefined,
  });
  // cdk-nag's AWS Solutions checks run on every synth: a finding not acknowledged with a reason fails it.
  Validations.of(app).addPlugins(new cdkNag.AwsSolutionsChecks(app, { verbose: true }));
  app.synth();
} catch (err) {
  if (!isUserError(err)) throw err;
  process.stderr.write(`moka: error: ${err.message}\n`);
  process.exitCode = 1;
}
