/**
 * Child process of the model benchmark: loads a checkpoint and reports the resident-set high-water mark, so the
 * measurement is not polluted by whatever the parent did before (generating the checkpoint, other benchmarks).
 *
 *   node --import tsx bench/model-load-rss.ts DIR [--run]
 *
 * "Loading" is what lib/model does before ONNX Runtime is involved: open and validate the directory, prepare
 * the float32 weights (F32 referenced in place, BF16/F16 converted block by block into a temporary file),
 * build the forward graph and emit the ONNX model (weights as external data references). With --run, it then
 * creates the ORT session and runs a 4-token forward, reported separately: ORT maps the weight files and the
 * run touches them all, so that high-water mark follows the model size, not the largest tensor.
 */
import { Graph, Session } from '../lib/engine/index.ts';
import { buildLlamaGraph } from '../lib/model/llama-graph.ts';
import { LlamaModel } from '../lib/model/llama-model.ts';

const maxRssBytes = () => process.resourceUsage().maxRSS * 1024;

const dir = process.argv[2]!;
const run = process.argv.includes('--run');
// The current resident set, not the high-water mark: a transient peak while importing must not widen the bound.
const before = process.memoryUsage().rss;
const t0 = performance.now();
const model = await LlamaModel.load(dir);
const graph = new Graph('rss-probe');
const llama = buildLlamaGraph(graph, model.config, model.weights);
const session = new Session(
  graph,
  {
    inputs: [llama.inputs.inputIds, llama.inputs.attentionMask, llama.inputs.ropeCos, llama.inputs.ropeSin],
    outputs: { hidden: llama.hidden },
  },
  { externalDataTotalBytes: 256 * 2 ** 20 },
);
const emitted = session.emit(
  new Map([
    ['batch', 1],
    ['seq', 4],
  ]),
);
const loadMs = performance.now() - t0;
const afterLoad = maxRssBytes();
let afterRun: number | null = null;
let runMs: number | null = null;
if (run) {
  const t1 = performance.now();
  await model.logits([[1, 2, 3, 4]]);
  runMs = performance.now() - t1;
  afterRun = maxRssBytes();
}
await model.close();
await session.release();
process.stdout.write(
  `${JSON.stringify({ before, afterLoad, afterRun, loadMs, runMs, modelProtoBytes: emitted.model.byteLength, external: emitted.external !== null })}\n`,
);
