import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // ORT sessions and finite-difference checks are CPU-heavy; the 2-core CI machine runs two workers.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Node 20 is supported on purpose: keep the AWS SDK's notice about its future Node 22 requirement out of the log.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
