/**
 * Child process of the quantization benchmark: quantizes a checkpoint and reports the resident-set high-water
 * mark and the time, so the measurement is not polluted by the parent's own allocations.
 *
 *   node --import tsx bench/quantize-rss.ts SRC OUT nf4|int4
 */
import { quantizeCheckpoint } from '../lib/quant/quantize-checkpoint.ts';

const [src, out, format] = process.argv.slice(2) as [string, string, 'nf4' | 'int4'];
const before = process.memoryUsage().rss;
const t0 = performance.now();
await quantizeCheckpoint({ modelDir: src, outDir: out, format, doubleQuant: format === 'nf4', force: true });
const ms = performance.now() - t0;
process.stdout.write(`${JSON.stringify({ before, maxRss: process.resourceUsage().maxRSS * 1024, ms })}\n`);
