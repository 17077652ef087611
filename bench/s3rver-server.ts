/**
 * An s3rver instance in its own process for bench/store.bench.ts (so its memory is not the store's): prints
 * `{"endpoint": …}` on stdout, then serves until killed. Usage: node --import tsx bench/s3rver-server.ts DIR
 */
import { startS3rver } from '../test/helpers/s3rver.ts';

const s3 = await startS3rver(['bench'], process.argv[2]);
process.stdout.write(`${JSON.stringify({ endpoint: s3.endpoint })}\n`);
process.on('SIGTERM', () => void s3.close().then(() => process.exit(0)));
