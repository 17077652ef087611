/**
 * `evaluate()` and `moka eval` on tiny generated checkpoints:
 * - the log-likelihoods in the per-item records equal ones computed by hand with a float64 TypeScript forward;
 * - acc / acc_norm predictions in the records follow from the recorded log-likelihoods and choice lengths;
 * - an adapter applied unmerged scores as the merged checkpoint does, for every adapter type, on 4-bit bases;
 * - generation tasks record prompt, output and extracted prediction;
 * - bad inputs fail with one line and leave nothing in --out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAdapterConfig, type AdapterConfigInput } from '../../lib/adapters/adapter-config.ts';
import { createAdapterRuntime } from '../../lib/adapters/adapter-runtime.ts';
import { saveAdapter } from '../../lib/adapters/adapter-files.ts';
import { baseRowNorms } from '../../lib/adapters/adapted-model.ts';
import { mergeCheckpoint } from '../../lib/adapters/merge-checkpoint.ts';
import { resolveTargets } from '../../lib/adapters/targets.ts';
import { randomNormal, seededRandom } from '../../lib/engine/gradcheck.ts';
import { isUserError } from '../../lib/errors.ts';
import { evaluate } from '../../lib/eval/index.ts';
import { extractAnswer } from '../../lib/eval/metrics.ts';
import { LlamaModel } from '../../lib/model/llama-model.ts';
import { generateText } from '../../lib/model/generation.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { openCheckpoint } from '../../lib/model/checkpoint.ts';
import { referenceForward, referenceWeights } from '../model/reference-llama.ts';
import { openFrozenBase } from '../../lib/quant/frozen-base.ts';
import { quantizeCheckpoint } from '../../lib/quant/quantize-checkpoint.ts';
import { runMoka } from '../helpers/run-moka.ts';

const DATA = fileURLToPath(new URL('./fixtures/data', import.meta.url));
let root: string;
const tiny = () => join(root, 'tiny');
const nf4 = () => join(root, 'nf4');
const int4 = () => join(root, 'int4');

interface ChoiceRecord {
  text: string;
  continuation: string;
  loglik: number;
  tokens: number;
  isGreedy: boolean;
}
interface McRecord {
  prompt?: string;
  prompts?: string[];
  choices: ChoiceRecord[];
  gold: number;
  prediction: number;
  predictionNorm?: number;
  correct: boolean;
}
const readResult = (dir: string, task: string) => JSON.parse(readFileSync(join(dir, `${task}.json`), 'utf8'));

const USER_TASK = [
  {
    context: 'Question: What is the capital of France?\nAnswer:',
    choices: ['Paris', 'a small town in the south'],
    answer: 0,
  },
  {
    context: 'The quick brown fox jumps over the',
    choices: ['lazy dog', 'moon', 'fence near the river'],
    answer: 'lazy dog',
  },
  { context: 'A spider has', choices: ['eight legs', 'six legs'], answer: 0 },
];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'moka-eval-'));
  await writeTinyCheckpoint({ dir: tiny(), seed: 11, numKvHeads: 2 });
  await quantizeCheckpoint({ modelDir: tiny(), outDir: nf4(), format: 'nf4', doubleQuant: true });
  await quantizeCheckpoint({ modelDir: tiny(), outDir: int4(), format: 'int4', blockSize: 32 });
  writeFileSync(join(root, 'facts.json'), JSON.stringify(USER_TASK));
  writeFileSync(
    join(root, 'gen.json'),
    JSON.stringify({
      type: 'generation',
      regex: '[a-z]+',
      maxNewTokens: 6,
      items: [{ prompt: 'The capital of France is', answer: 'paris' }],
    }),
  );
}, 30_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('evaluate on multiple-choice tasks', () => {
  it('records log-likelihoods equal to a float64 reference forward computed by hand (|Δ| < 1e-4)', async () => {
    const out = join(root, 'out-hand');
    const summary = await evaluate({
      modelDir: tiny(),
      tasks: [join(root, 'facts.json'), 'winogrande'],
      dataDir: DATA,
      outDir: out,
      progress: 'none',
      intraOpThreads: 1,
    });
    expect(summary.tasks.map((t) => [t.task, t.items, t.file])).toEqual([
      ['facts', 3, join(out, 'facts.json')],
      ['winogrande', 2, join(out, 'winogrande.json')],
    ]);
    // By hand: the plain float64 TypeScript forward of test/model/reference-llama.ts (no ORT), log-softmax of
    // each position's logits, summed over the continuation's tokens.
    const ckpt = await openCheckpoint(tiny());
    try {
      const ref = await referenceWeights(ckpt);
      const tok = ckpt.tokenizer();
      const V = ckpt.config.vocabSize;
      const byHand = (context: string, continuation: string) => {
        const pair = tok.encodeContextContinuation(context, continuation);
        const seq = [...pair.context, ...pair.continuation];
        const logits = referenceForward(ref, seq.slice(0, -1));
        let sum = 0;
        for (let j = pair.context.length; j < seq.length; j++) {
          const row = Array.from(logits.subarray((j - 1) * V, j * V));
          const max = Math.max(...row);
          const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
          sum += row[seq[j]!]! - lse;
        }
        return { sum, tokens: pair.continuation.length };
      };
      for (const task of ['facts', 'winogrande']) {
        const result = readResult(out, task);
        for (const rec of result.records as McRecord[]) {
          for (const [c, choice] of rec.choices.entries()) {
            const context = rec.prompt ?? rec.prompts![c]!;
            const hand = byHand(context, choice.continuation);
            // float32 ORT vs float64 reference: ~1e-6 per log-prob of ~6, over a few tokens.
            expect(Math.abs(choice.loglik - hand.sum)).toBeLessThan(1e-4);
            expect(choice.tokens).toBe(hand.tokens);
          }
        }
      }
    } finally {
      await ckpt.close();
    }
    // The user task's records: the prompt, " " + choice, gold from an index or the choice text.
    const facts = readResult(out, 'facts');
    expect(facts.records[0].prompt).toBe(USER_TASK[0]!.context);
    expect(facts.records[1].choices.map((c: ChoiceRecord) => c.continuation)).toEqual([
      ' lazy dog',
      ' moon',
      ' fence near the river',
    ]);
    expect(facts.records.map((r: McRecord) => r.gold)).toEqual([0, 0, 0]);
    expect(facts.protocol).toBe('loglikelihood');
    expect(facts.model).toMatchObject({ dir: tiny(), format: 'float' });
    expect(facts.adapter).toBeNull();
    // Winogrande: two contexts, one shared continuation.
    const wino = readResult(out, 'winogrande');
    expect(wino.records[0].prompts).toHaveLength(2);
    expect(wino.records[0].choices[0].continuation).toBe(wino.records[0].choices[1].continuation);
  });

  it('predictions and metrics follow from the recorded log-likelihoods (acc_norm by character length)', async () => {
    const out = join(root, 'out-hand');
    const facts = readResult(out, 'facts');
    let acc = 0;
    let accNorm = 0;
    for (const r of facts.records as McRecord[]) {
      const ll = r.choices.map((c) => c.loglik);
      const norm = r.choices.map((c) => c.loglik / [...c.text].length);
      expect(r.prediction).toBe(ll.indexOf(Math.max(...ll)));
      expect(r.predictionNorm).toBe(norm.indexOf(Math.max(...norm)));
      acc += Number(r.prediction === r.gold);
      accNorm += Number(r.predictionNorm === r.gold);
    }
    expect(facts.metrics.acc.value).toBeCloseTo(acc / 3, 12);
    expect(facts.metrics.acc_norm.value).toBeCloseTo(accNorm / 3, 12);
    // WinoGrande partial scoring: the option whose context makes the shared continuation likelier; acc only.
    const wino = readResult(out, 'winogrande');
    for (const r of wino.records as McRecord[]) {
      expect(r.prompts).toHaveLength(2);
      expect(r.prediction).toBe(r.choices[1]!.loglik > r.choices[0]!.loglik ? 1 : 0);
      expect(r.predictionNorm).toBeUndefined();
    }
    expect(Object.keys(wino.metrics)).toEqual(['acc']);
  });
});

const ADAPTERS: Record<string, AdapterConfigInput> = {
  moka: { type: 'moka', targetModules: 'all-linear', plan: { count: 2 } },
  mokas: { type: 'mokas', targetModules: ['q_proj', 'v_proj', 'down_proj'] },
  krona: { type: 'krona', targetModules: ['q_proj', 'up_proj'] },
  lora: { type: 'lora', r: 2 },
  dora: { type: 'dora', r: 2, targetModules: ['q_proj', 'down_proj'] },
};

// Every adapter type on NF4 (double quant); LoRA on int4 as well.
const CASES: [string, string, () => string][] = [
  ...Object.keys(ADAPTERS).map((t): [string, string, () => string] => [t, 'nf4', nf4]),
  ['lora', 'int4', int4],
];

describe('unmerged adapter == merged checkpoint, on a 4-bit base', () => {
  it.each(CASES)(
    '%s on %s: every choice log-likelihood within 5e-5, the same predictions',
    async (type, format, baseDir) => {
      const id = `${type}-${format}`;
      const base = await openFrozenBase(baseDir());
      const cfg = parseAdapterConfig(ADAPTERS[type]!);
      const norms = await baseRowNorms(
        base,
        resolveTargets(base.config, cfg).map((t) => t.name),
      );
      const rt = createAdapterRuntime(base.config, cfg, { seed: 1, baseRowNorms: (m) => norms.get(m)! });
      const rand = seededRandom(7);
      const values = new Map(
        rt.tensors.map((t) => [t.name, Float32Array.from(randomNormal(t.init.length, rand, 0.05))]),
      );
      await base.close();
      const adir = join(root, `adapter-${id}`);
      await saveAdapter(adir, rt, values, { baseModel: baseDir() });
      const mdir = join(root, `merged-${id}`);
      await mergeCheckpoint({ model: baseDir(), adapter: adir, out: mdir });

      const tasks = [join(root, 'facts.json'), 'arc_easy', 'winogrande'];
      const common = { tasks, dataDir: DATA, progress: 'none' as const, intraOpThreads: 1 };
      await evaluate({ modelDir: baseDir(), adapterDir: adir, outDir: join(root, `u-${id}`), ...common });
      await evaluate({ modelDir: mdir, outDir: join(root, `m-${id}`), ...common });
      await evaluate({ modelDir: baseDir(), outDir: join(root, `b-${id}`), ...common });
      let changed = 0;
      for (const task of ['facts', 'arc_easy', 'winogrande']) {
        const u = readResult(join(root, `u-${id}`), task);
        const m = readResult(join(root, `m-${id}`), task);
        const b = readResult(join(root, `b-${id}`), task);
        expect(u.adapter).toMatchObject({ dir: adir, type });
        expect(u.model.format).toBe(format);
        (u.records as McRecord[]).forEach((r, i) => {
          r.choices.forEach((c, j) => {
            // Merged weights are the dequantized base + ΔW in float32, the unmerged path adds the fused update to
            // the 4-bit matmul: only float32 rounding differs (observed ≤ 2.4e-6 on sums of a few log-probs of ~6).
            expect(Math.abs(c.loglik - m.records[i].choices[j].loglik)).toBeLessThan(5e-5);
            changed = Math.max(changed, Math.abs(c.loglik - b.records[i].choices[j].loglik));
          });
          expect(r.prediction).toBe(m.records[i].prediction);
        });
      }
      expect(changed).toBeGreaterThan(1e-3); // the adapter does change the scores
    },
    30_000,
  );
});

describe('generation tasks', () => {
  it('record the prompt, the greedy output and the first regex match; exact match against the answer', async () => {
    const out = join(root, 'out-gen');
    const s = await evaluate({
      modelDir: tiny(),
      tasks: [join(root, 'gen.json'), 'boolq-gen'],
      dataDir: DATA,
      outDir: out,
      numBeams: 1,
      maxNewTokens: 5,
      progress: 'none',
      intraOpThreads: 1,
    });
    expect(s.tasks.map((t) => [t.task, t.protocol, Object.keys(t.metrics)])).toEqual([
      ['gen', 'generation', ['exact_match']],
      ['boolq-gen', 'generation', ['exact_match']],
    ]);
    const gen = readResult(out, 'gen');
    const model = await LlamaModel.load(tiny(), { intraOpThreads: 1 });
    try {
      const expected = await generateText(model, 'The capital of France is', { maxNewTokens: 5 });
      expect(gen.records[0].output).toBe(expected.text);
    } finally {
      await model.close();
    }
    expect(gen.records[0].prediction).toBe(extractAnswer(gen.records[0].output, '[a-z]+'));
    expect(gen.metrics.exact_match.value).toBe(gen.records[0].prediction === 'paris' ? 1 : 0);
    const boolq = readResult(out, 'boolq-gen');
    expect(boolq.decoding).toEqual({ method: 'greedy', maxNewTokens: 5, numBeams: 1 });
    expect(boolq.records[0].answer).toBe('true');
  });

  it('beam search (the LLM-Adapters default of 4 beams) runs and is recorded', async () => {
    const out = join(root, 'out-beam');
    await evaluate({
      modelDir: tiny(),
      tasks: ['piqa-gen'],
      dataDir: DATA,
      outDir: out,
      maxNewTokens: 3,
      progress: 'none',
    });
    const r = readResult(out, 'piqa-gen');
    expect(r.decoding).toEqual({ method: 'beam', maxNewTokens: 3, numBeams: 4 });
    expect(typeof r.records[0].output).toBe('string');
  });
});

describe('bad inputs fail with one line and leave nothing in --out', () => {
  const cases: [string, () => Record<string, unknown>, RegExp][] = [
    [
      'an unknown task name',
      () => ({ tasks: ['boolq', 'bolq'] }),
      /unknown task "bolq"; built-in tasks are boolq, piqa, .*mmlu.*, or give the path/,
    ],
    [
      'a malformed task file',
      () => {
        const f = join(root, 'malformed.json');
        writeFileSync(
          f,
          JSON.stringify([
            { context: 'x', choices: ['a', 'b'], answer: 0 },
            { context: 'y', choices: 'ab', answer: 0 },
          ]),
        );
        return { tasks: [f] };
      },
      /malformed\.json item 2 field "choices": .*; each item must be \{"context", "choices", "answer"\}/,
    ],
    [
      'a task file whose answer is not a choice',
      () => {
        const f = join(root, 'noanswer.jsonl');
        writeFileSync(f, '{"context": "x", "choices": ["a", "b"], "answer": "c"}\n');
        return { tasks: [f] };
      },
      /noanswer\.jsonl item 1: "answer" "c" is not one of the 2 choices/,
    ],
    [
      'a task file that is not JSON',
      () => {
        const f = join(root, 'notjson.json');
        writeFileSync(f, '[{"context": ');
        return { tasks: [f] };
      },
      /task file .*notjson\.json is not valid JSON/,
    ],
    [
      'a task file that is not UTF-8',
      () => {
        const f = join(root, 'latin1.json');
        writeFileSync(
          f,
          Buffer.from('[{"context": "caf\xe9", "choices": ["a", "b"], "answer": 0}]', 'latin1'),
        );
        return { tasks: [f] };
      },
      /task file .*latin1\.json is not UTF-8 text; save it as UTF-8/,
    ],
    [
      'a choice with no tokens to score (checked before any task runs)',
      () => {
        const f = join(root, 'emptychoice.json');
        writeFileSync(
          f,
          JSON.stringify({ targetDelimiter: '', items: [{ context: 'x', choices: ['a', ''], answer: 0 }] }),
        );
        return { tasks: [join(root, 'facts.json'), f] };
      },
      /task emptychoice item 1, request 2: the continuation is empty; there is nothing to score/,
    ],
    [
      'an adapter for another base model',
      () => {
        return { tasks: [join(root, 'facts.json')], adapterDir: join(root, 'adapter-other') };
      },
      /was trained on a base model of another shape \(hidden_size 32, this model \d+.*\)\. Use the adapter with the base model it was trained on/,
    ],
  ];

  beforeAll(async () => {
    const other = join(root, 'other');
    await writeTinyCheckpoint({ dir: other, seed: 2, hiddenSize: 32, numHeads: 2, numKvHeads: 1 });
    const base = await openFrozenBase(other);
    const rt = createAdapterRuntime(base.config, parseAdapterConfig({ type: 'lora', r: 2 }), { seed: 1 });
    await saveAdapter(join(root, 'adapter-other'), rt, new Map(rt.tensors.map((t) => [t.name, t.init])));
    await base.close();
  });

  it.each(cases)('%s', async (_, make, message) => {
    const out = join(root, `bad-${Math.random().toString(36).slice(2)}`);
    const err = await evaluate({
      modelDir: tiny(),
      dataDir: DATA,
      outDir: out,
      progress: 'none',
      ...make(),
    } as never).catch((e: Error) => e);
    expect(isUserError(err)).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message.split('\n')).toHaveLength(1);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  });
});

describe('moka eval', () => {
  it('prints the summary table, JSON-lines progress on a pipe, and writes <task>.json', () => {
    const out = join(root, 'cli-out');
    const r = runMoka([
      'eval',
      '--model',
      tiny(),
      '--tasks',
      `boolq,${join(root, 'facts.json')}`,
      '--data',
      DATA,
      '--out',
      out,
      '--limit',
      '2',
      '--threads',
      '1',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^task\s+items\s+metrics \(%\)\n/);
    expect(r.stdout).toMatch(/\nboolq\s+2\s+acc \d+\.\d\d ± \d+\.\d\d\n/);
    expect(r.stdout).toMatch(/\nfacts\s+2\s+acc .* acc_norm /);
    const events = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events.at(-1)).toMatchObject({
      event: 'progress',
      command: 'eval',
      phase: 'facts',
      done: 2,
      total: 2,
    });
    expect(readdirSync(out).sort()).toEqual(['boolq.json', 'facts.json']);
  });

  it('an unknown task is one line on stderr, exit code 1 or 2, and no --out directory', () => {
    const out = join(root, 'cli-bad');
    mkdirSync(join(root, 'cli-parent'), { recursive: true });
    const r = runMoka(['eval', '--model', tiny(), '--tasks', 'nope', '--out', out]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/unknown task "nope"/);
    expect(existsSync(out)).toBe(false);
  });
});
