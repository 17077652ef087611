#!/usr/bin/env node
// The `moka` executable: runs the TypeScript CLI directly through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
await import('./moka-cli.ts');
