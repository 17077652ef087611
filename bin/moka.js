#!/usr/bin/env node
// The `moka` executable: runs the TypeScript CLI directly through tsx (no build step).
import { register } from 'tsx/esm/api';

// moka supports Node 20 on purpose (engines: >=20.9); the AWS SDK would print a multi-line notice about its own
// future Node 22 requirement on every command that builds a client. Users can still opt back in by setting it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
register();
await import('./moka-cli.ts');
