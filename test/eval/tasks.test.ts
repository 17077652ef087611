/**
 * Every built-in task's rendered prompt, pinned on fixture items written in each dataset's public field names
 * (test/eval/fixtures/data), against the lm-evaluation-harness templates and the LLM-Adapters wrapper; k-shot
 * contexts; HellaSwag's preprocessing; WinoGrande's partial scoring; grouping of shared contexts.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hellaswagPreprocess, pythonCapitalize, BUILTIN_TASKS } from '../../lib/eval/builtin-tasks.ts';
import { loadTasks } from '../../lib/eval/load-tasks.ts';
import { MMLU_SUBJECTS } from '../../lib/eval/mmlu-subjects.ts';
import { multipleChoicePrompt, renderTemplate, selectShots } from '../../lib/eval/prompts.ts';
import { choiceRequests, groupRequests, tokenizeRequests } from '../../lib/eval/requests.ts';
import type {
  GenerationDoc,
  GenerationTask,
  LoadedTask,
  MultipleChoiceDoc,
  MultipleChoiceTask,
} from '../../lib/eval/task-definition.ts';
import { Tokenizer } from '../../lib/model/tokenizer.ts';
import { buildTinyTokenizer } from '../../lib/model/tiny-tokenizer.ts';

const DATA = fileURLToPath(new URL('./fixtures/data', import.meta.url));

async function load(name: string, shots?: number): Promise<LoadedTask> {
  return (await loadTasks([name], { dataDir: DATA, ...(shots !== undefined ? { shots } : {}) }))[0]!;
}

/** The requests of item `i` with the task's default (or given) shots, seed 1234. */
async function requestsOf(name: string, i: number, shots?: number) {
  const t = await load(name, shots);
  const task = t.task as MultipleChoiceTask;
  const doc = t.docs[i] as MultipleChoiceDoc;
  const k = shots ?? task.shots;
  return {
    requests: choiceRequests(
      multipleChoicePrompt(task, doc, selectShots(task, doc, t.fewshotDocs, k, 1234, i)),
    ),
    gold: doc.gold,
    choices: doc.choices,
  };
}

describe('built-in multiple-choice prompts (lm-eval templates)', () => {
  it('boolq: "{passage}\\nQuestion: {question}?\\nAnswer:" with " no" / " yes"', async () => {
    const { requests, gold } = await requestsOf('boolq', 0);
    const context =
      'The Sun is the star at the center of the Solar System.\nQuestion: is the sun a star?\nAnswer:';
    expect(requests).toEqual([
      { context, continuation: ' no' },
      { context, continuation: ' yes' },
    ]);
    expect(gold).toBe(1);
    expect((await requestsOf('boolq', 1)).gold).toBe(0);
  });

  it('piqa: "Question: {goal}\\nAnswer:" with " " + sol1 / sol2', async () => {
    const { requests, gold } = await requestsOf('piqa', 1);
    expect(requests).toEqual([
      {
        context: 'Question: To dry wet shoes,\nAnswer:',
        continuation: ' put them in the freezer overnight.',
      },
      { context: 'Question: To dry wet shoes,\nAnswer:', continuation: ' stuff them with newspaper.' },
    ]);
    expect(gold).toBe(1);
  });

  it('siqa: "Q: {context} {question}\\nA:" with three answers, gold = label − 1', async () => {
    const { requests, gold } = await requestsOf('siqa', 1);
    const context = 'Q: Alex broke the vase. What will Alex want to do next?\nA:';
    expect(requests).toEqual([
      { context, continuation: ' laugh' },
      { context, continuation: ' hide' },
      { context, continuation: ' apologize' },
    ]);
    expect(gold).toBe(2);
  });

  it('hellaswag: activity_label + ": " + ctx_a + " " + ctx_b.capitalize(), preprocessed, and preprocessed endings', async () => {
    const a = await requestsOf('hellaswag', 0);
    expect(a.requests.map((r) => r.context)).toEqual(
      Array(4).fill(
        'Roof shingle removal: A man is sitting on a roof. He starts pulling up roofing on a roof.',
      ),
    );
    expect(a.requests.map((r) => r.continuation)).toEqual([
      ' is using wrap to wrap a pair of skis.',
      ' is ripping level tiles off.',
      " is holding a rubik's cube.",
      ' starts pulling up roofing on a roof.',
    ]);
    expect(a.gold).toBe(3);
    // [title] → ". ", [header]/[step] dropped, double spaces squeezed once; capitalize() lowers the rest.
    const b = await requestsOf('hellaswag', 1);
    expect(b.requests[0]!.context).toBe(
      'Home and Garden: How to clean a grill. Heat the grill. Then scrub the grates',
    );
    expect(b.choices).toEqual([
      ' Use a wire brush. Rinse well.',
      'Eat the brush.',
      'Paint the grill. blue.',
      'Sell the house.',
    ]);
    expect(b.requests[0]!.continuation).toBe('  Use a wire brush. Rinse well.');
  });

  it('winogrande: partial scoring, one context per option and the shared continuation after the blank', async () => {
    const { requests, gold } = await requestsOf('winogrande', 0);
    expect(requests).toEqual([
      {
        context: "The trophy doesn't fit into the suitcase because the trophy",
        continuation: ' is too large.',
      },
      {
        context: "The trophy doesn't fit into the suitcase because the suitcase",
        continuation: ' is too large.',
      },
    ]);
    expect(gold).toBe(0);
  });

  it('arc_easy / arc_challenge: "Question: {question}\\nAnswer:" with choices.text; gold from answerKey in choices.label', async () => {
    const e = await requestsOf('arc_easy', 0);
    expect(e.requests).toEqual(
      [' the Moon', ' the Sun', ' a mirror', ' a rock'].map((continuation) => ({
        context: 'Question: Which of these is a source of light?\nAnswer:',
        continuation,
      })),
    );
    expect(e.gold).toBe(1);
    const numeric = await requestsOf('arc_easy', 1); // labels "1".."3": answerKey "1" is index 0
    expect(numeric.gold).toBe(0);
    expect(numeric.requests).toHaveLength(3);
    const c = await requestsOf('arc_challenge', 0);
    expect(c.requests[0]).toEqual({
      context:
        'Question: George wants to warm his hands quickly by rubbing them. Which skin surface will produce the most heat?\nAnswer:',
      continuation: ' dry palms',
    });
  });

  it('openbookqa: question_stem with choices.text; answerKey is left-stripped', async () => {
    const a = await requestsOf('openbookqa', 0);
    expect(a.requests[0]).toEqual({
      context:
        'Frilled sharks and angler fish live far beneath the surface of the ocean, which is why they are known as',
      continuation: ' Deep sea animals',
    });
    expect((await requestsOf('openbookqa', 1)).gold).toBe(1); // answerKey " B"
  });

  it('mmlu zero-shot: the subject description, the question (stripped) with lettered choices, " A".." D"', async () => {
    const { requests, gold } = await requestsOf('mmlu', 0, 0);
    const context =
      'The following are multiple choice questions (with answers) about abstract algebra.\n\n' +
      'Find the degree of the field extension Q(sqrt(2)) over Q.\nA. 0\nB. 2\nC. 1\nD. 3\nAnswer:';
    expect(requests).toEqual([' A', ' B', ' C', ' D'].map((continuation) => ({ context, continuation })));
    expect(gold).toBe(1);
  });

  it('mmlu k-shot: the first k dev items of the same subject, each with its answer letter, joined by "\\n\\n"', async () => {
    const { requests } = await requestsOf('mmlu', 1, 2);
    expect(requests[0]!.context).toBe(
      'The following are multiple choice questions (with answers) about abstract algebra.\n\n' +
        'What is 1 + 1 in Z_2?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: A\n\n' +
        'How many elements does the trivial group have?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n' +
        'What is the order of the group Z_4?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer:',
    );
    // The default is 5 shots, all from the item's own subject.
    const five = (await requestsOf('mmlu', 2)).requests[0]!.context;
    expect(
      five.startsWith('The following are multiple choice questions (with answers) about anatomy.\n\n'),
    ).toBe(true);
    expect(five.match(/\nAnswer:/g)).toHaveLength(6);
    expect(five).toContain('Which organ pumps blood?\nA. heart\nB. lung\nC. liver\nD. kidney\nAnswer: A\n\n');
    expect(five).not.toContain('Z_2');
    expect(
      five.endsWith('Which bone is in the upper arm?\nA. femur\nB. humerus\nC. tibia\nD. ulna\nAnswer:'),
    ).toBe(true);
  });

  it('random shots (boolq 1-shot): a train item with its answer, the same for a seed, prefixed to the prompt', async () => {
    const first = await requestsOf('boolq', 0, 1);
    const again = await requestsOf('boolq', 0, 1);
    expect(first).toEqual(again);
    const shots = [
      'Water makes things wet.\nQuestion: is water wet?\nAnswer: yes\n\n',
      'Most fish swim and cannot fly.\nQuestion: can fish fly?\nAnswer: no\n\n',
    ];
    const ctx = first.requests[0]!.context;
    expect(
      shots.some(
        (s) =>
          ctx ===
          `${s}The Sun is the star at the center of the Solar System.\nQuestion: is the sun a star?\nAnswer:`,
      ),
    ).toBe(true);
  });

  it('lists the 57 MMLU subjects and all eight commonsense tasks in both protocols', () => {
    expect(new Set(MMLU_SUBJECTS).size).toBe(57);
    const names = [...BUILTIN_TASKS.keys()];
    for (const t of [
      'boolq',
      'piqa',
      'siqa',
      'hellaswag',
      'winogrande',
      'arc_easy',
      'arc_challenge',
      'openbookqa',
    ]) {
      expect(names).toContain(t);
      expect(names).toContain(`${t}-gen`);
      expect(BUILTIN_TASKS.get(`${t}-gen`)!.protocol).toBe('generation');
    }
    expect(names).toContain('mmlu');
  });
});

describe('LLM-Adapters generation prompts', () => {
  it.each([
    ['boolq-gen', 'true|false'],
    ['piqa-gen', 'solution1|solution2'],
    ['siqa-gen', 'answer1|answer2|answer3|answer4|answer5'],
    ['hellaswag-gen', 'ending1|ending2|ending3|ending4'],
    ['winogrande-gen', 'option1|option2'],
    ['arc_easy-gen', 'answer1|answer2|answer3|answer4|answer5'],
    ['arc_challenge-gen', 'answer1|answer2|answer3|answer4|answer5'],
    ['openbookqa-gen', 'answer1|answer2|answer3|answer4|answer5'],
  ])('%s wraps the instruction in the Alpaca evaluation prompt and extracts /%s/', async (name, regex) => {
    const t = await load(name);
    const task = t.task as GenerationTask;
    const doc = t.docs[0] as GenerationDoc;
    expect(task.answerRegex).toBe(regex);
    expect(task.numBeams).toBe(4);
    expect(task.maxNewTokens).toBe(32);
    expect(renderTemplate(task.promptTemplate, doc.fields)).toBe(
      'Below is an instruction that describes a task. Write a response that appropriately completes the request. ' +
        `\n\n                ### Instruction:\n                ${doc.fields.instruction as string}\n\n` +
        '                ### Response:\n                ',
    );
  });

  it('boolq-gen renders the fixture item byte for byte', async () => {
    const t = await load('boolq-gen');
    expect(
      renderTemplate((t.task as GenerationTask).promptTemplate, (t.docs[0] as GenerationDoc).fields),
    ).toBe(
      'Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n' +
        '                ### Instruction:\n' +
        '                Please answer the following question with true or false, question: is the sun a star?\n\n' +
        'Answer format: true/false\n\n' +
        '                ### Response:\n' +
        '                ',
    );
    expect((t.docs[0] as GenerationDoc).answer).toBe('true');
  });
});

describe('preprocessing helpers', () => {
  it('hellaswagPreprocess and pythonCapitalize follow Python', () => {
    expect(hellaswagPreprocess('  a [title] b [step] c   d ')).toBe('a. b c  d');
    expect(pythonCapitalize('hELLO wORLD')).toBe('Hello world');
    expect(pythonCapitalize('')).toBe('');
  });

  it('renderTemplate keeps a trailing newline (lm-eval renders with keep_trailing_newline)', () => {
    expect(renderTemplate('{{a}}\n\n', { a: 'x' })).toBe('x\n\n');
  });
});

describe('request grouping', () => {
  const files = buildTinyTokenizer();
  const tok = Tokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);

  it('groups the choices of one question (one context run), keeps WinoGrande options apart', async () => {
    const arc = await requestsOf('arc_easy', 0);
    const wino = await requestsOf('winogrande', 0);
    const g = groupRequests(tokenizeRequests(tok, [...arc.requests, ...wino.requests], 'test'));
    expect(g.groups).toHaveLength(3);
    expect(g.groups[0]!.continuations).toHaveLength(4);
    expect(g.placement).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [0, 3],
      [1, 0],
      [2, 0],
    ]);
    // The tokens are the tokenizer's context/continuation pair.
    const pair = tok.encodeContextContinuation(arc.requests[1]!.context, arc.requests[1]!.continuation);
    expect(g.groups[0]!.context).toEqual(pair.context);
    expect(g.groups[0]!.continuations[1]).toEqual(pair.continuation);
  });
});

describe('limits and user task headers', () => {
  it('--limit applies per MMLU subject, as lm-eval limits each subtask', async () => {
    const [t] = await loadTasks(['mmlu'], { dataDir: DATA, limit: 1 });
    expect(t!.docs.map((d) => (d as MultipleChoiceDoc).fields.subject)).toEqual([
      'abstract_algebra',
      'anatomy',
    ]);
    const [b] = await loadTasks(['boolq'], { dataDir: DATA, limit: 2 });
    expect(b!.docs).toHaveLength(2);
  });

  it('a task file header sets the description, delimiter and shots (first k "fewshot" items)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-usertask-'));
    try {
      const f = join(dir, 'capitals.json');
      writeFileSync(
        f,
        JSON.stringify({
          description: 'Capitals of countries.\n\n',
          targetDelimiter: ': ',
          shots: 1,
          fewshot: [{ context: 'France', choices: ['Paris', 'Lyon'], answer: 'Paris' }],
          items: [{ context: 'Italy', choices: ['Milan', 'Rome'], answer: 1 }],
        }),
      );
      const [t] = await loadTasks([f], {});
      const task = t!.task as MultipleChoiceTask;
      const doc = t!.docs[0] as MultipleChoiceDoc;
      expect(t!.name).toBe('capitals');
      const shots = selectShots(task, doc, t!.fewshotDocs, task.shots, 1234, 0);
      expect(choiceRequests(multipleChoicePrompt(task, doc, shots))).toEqual([
        { context: 'Capitals of countries.\n\nFrance: Paris\n\nItaly', continuation: ': Milan' },
        { context: 'Capitals of countries.\n\nFrance: Paris\n\nItaly', continuation: ': Rome' },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a JSON Lines file of {prompt, answer} is a greedy generation task whose prediction is the first output line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moka-usertask-'));
    try {
      const f = join(dir, 'qa.jsonl');
      writeFileSync(f, '{"prompt": "2 + 2 =", "answer": "4"}\n{"prompt": "3 + 3 =", "answer": "6"}\n');
      const [t] = await loadTasks([f], { limit: 1 });
      const task = t!.task as GenerationTask;
      expect([t!.name, task.protocol, task.answerRegex, task.numBeams, task.maxNewTokens]).toEqual([
        'qa',
        'generation',
        null,
        1,
        32,
      ]);
      expect(t!.docs).toEqual([{ fields: { prompt: '2 + 2 =' }, answer: '4' }]);
      expect(renderTemplate(task.promptTemplate, (t!.docs[0] as GenerationDoc).fields)).toBe('2 + 2 =');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
