/**
 * The built-in tasks: the eight commonsense tasks and MMLU with lm-evaluation-harness prompts and metrics
 * (EleutherAI/lm-evaluation-harness @4e7e0d4 task YAMLs), and the eight commonsense tasks again in the
 * LLM-Adapters generation protocol (`<task>-gen`, AGI-Edgerunners/LLM-Adapters @8166572
 * `commonsense_evaluate.py`), which the DoRA and LLM-Adapters baselines report. Fields are each dataset's
 * public field names on the Hugging Face Hub.
 */
import { MMLU_SUBJECTS } from './mmlu-subjects.ts';
import {
  checkGold,
  integerField,
  stringField,
  stringListField,
  type DataRecord,
  type GenerationTask,
  type MultipleChoiceDoc,
  type MultipleChoiceTask,
  type TaskDefinition,
} from './task-definition.ts';

const LM_EVAL = 'lm-evaluation-harness @4e7e0d4';
const COMMON = {
  targetDelimiter: ' ',
  fewshotDelimiter: '\n\n',
  shots: 0,
  fewshotSampler: 'random',
} as const;

/**
 * HellaSwag's text preprocessing (lm-eval `hellaswag/utils.py preprocess`): strip, " [title]" → ". ", drop
 * bracketed tags, then Python's `replace("  ", " ")` (one left-to-right pass, as split/join does).
 */
export function hellaswagPreprocess(text: string): string {
  return text
    .trim()
    .split(' [title]')
    .join('. ')
    .replace(/\[.*?\]/g, '')
    .split('  ')
    .join(' ');
}

/** Python's str.capitalize(): the first character upper case, the rest lower case. */
export function pythonCapitalize(s: string): string {
  const [first = '', ...rest] = [...s];
  return first.toUpperCase() + rest.join('').toLowerCase();
}

/** ARC / OpenBookQA: choices.text, and the index of answerKey in choices.label. */
function labelledChoices(r: DataRecord, answerKey: string): { choices: string[]; gold: number } {
  const choices = stringListField(r, 'choices.text');
  const labels = stringListField(r, 'choices.label');
  const gold = labels.indexOf(answerKey);
  if (gold < 0) throw new Error(`field "answerKey" is "${answerKey}", not one of choices.label [${labels}]`);
  return { choices, gold };
}

const boolq: MultipleChoiceTask = {
  name: 'boolq',
  protocol: 'loglikelihood',
  title: 'BoolQ (super_glue): yes/no questions about a passage',
  source: {
    hub: 'super_glue/boolq',
    dirs: ['boolq', 'super_glue/boolq', 'aps/super_glue/boolq'],
    split: 'validation',
    fewshotSplit: 'train',
    fields: ['passage', 'question', 'label'],
  },
  toDoc: (r) => {
    const choices = ['no', 'yes'];
    return {
      fields: { passage: stringField(r, 'passage'), question: stringField(r, 'question') },
      choices,
      gold: checkGold(integerField(r, 'label'), choices, 'label'),
    };
  },
  docToText: '{{passage}}\nQuestion: {{question}}?\nAnswer:',
  ...COMMON,
  metrics: ['acc'],
  protocolNote: `${LM_EVAL} boolq: loglikelihood of " no" / " yes" after the prompt; acc`,
};

const piqa: MultipleChoiceTask = {
  name: 'piqa',
  protocol: 'loglikelihood',
  title: 'PIQA: physical commonsense, two solutions to a goal',
  source: {
    hub: 'ybisk/piqa',
    dirs: ['piqa', 'ybisk/piqa'],
    split: 'validation',
    fewshotSplit: 'train',
    fields: ['goal', 'sol1', 'sol2', 'label'],
  },
  toDoc: (r) => {
    const choices = [stringField(r, 'sol1'), stringField(r, 'sol2')];
    return {
      fields: { goal: stringField(r, 'goal') },
      choices,
      gold: checkGold(integerField(r, 'label'), choices, 'label'),
    };
  },
  docToText: 'Question: {{goal}}\nAnswer:',
  ...COMMON,
  metrics: ['acc', 'acc_norm'],
  protocolNote: `${LM_EVAL} piqa: loglikelihood of " " + sol1 / sol2; acc, acc_norm`,
};

const siqa: MultipleChoiceTask = {
  name: 'siqa',
  protocol: 'loglikelihood',
  title: 'Social IQa: social commonsense, three answers',
  source: {
    hub: 'allenai/social_i_qa',
    dirs: ['siqa', 'social_i_qa', 'allenai/social_i_qa'],
    split: 'validation',
    fewshotSplit: 'train',
    fields: ['context', 'question', 'answerA', 'answerB', 'answerC', 'label'],
  },
  toDoc: (r) => {
    const choices = [stringField(r, 'answerA'), stringField(r, 'answerB'), stringField(r, 'answerC')];
    return {
      fields: { context: stringField(r, 'context'), question: stringField(r, 'question') },
      choices,
      gold: checkGold(integerField(r, 'label') - 1, choices, 'label'),
    };
  },
  docToText: 'Q: {{context}} {{question}}\nA:',
  ...COMMON,
  metrics: ['acc'],
  protocolNote: `${LM_EVAL} social_iqa: loglikelihood of " " + answerA/B/C, gold = label − 1; acc`,
};

const hellaswag: MultipleChoiceTask = {
  name: 'hellaswag',
  protocol: 'loglikelihood',
  title: 'HellaSwag: the most plausible ending of a description',
  source: {
    hub: 'Rowan/hellaswag',
    dirs: ['hellaswag', 'Rowan/hellaswag'],
    split: 'validation',
    fewshotSplit: 'train',
    fields: ['activity_label', 'ctx_a', 'ctx_b', 'endings', 'label'],
  },
  toDoc: (r) => {
    const ctx = `${stringField(r, 'ctx_a')} ${pythonCapitalize(stringField(r, 'ctx_b'))}`;
    const choices = stringListField(r, 'endings').map(hellaswagPreprocess);
    return {
      fields: { query: hellaswagPreprocess(`${stringField(r, 'activity_label')}: ${ctx}`) },
      choices,
      gold: checkGold(integerField(r, 'label'), choices, 'label'),
    };
  },
  docToText: '{{query}}',
  ...COMMON,
  metrics: ['acc', 'acc_norm'],
  protocolNote:
    `${LM_EVAL} hellaswag: query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()), ` +
    'choices = preprocess(endings); acc, acc_norm',
};

/** WinoGrande partial scoring (lm-eval `winogrande/preprocess_winogrande.py`). */
function blank(doc: MultipleChoiceDoc): { sentence: string; at: number } {
  const sentence = doc.fields.sentence as string;
  return { sentence, at: sentence.indexOf('_') };
}

const winogrande: MultipleChoiceTask = {
  name: 'winogrande',
  protocol: 'loglikelihood',
  title: 'WinoGrande (xl): fill the blank with one of two options',
  source: {
    hub: 'allenai/winogrande (winogrande_xl)',
    dirs: ['winogrande', 'winogrande/winogrande_xl', 'allenai/winogrande/winogrande_xl', 'winogrande_xl'],
    split: 'validation',
    fewshotSplit: 'train',
    fields: ['sentence', 'option1', 'option2', 'answer'],
  },
  toDoc: (r) => {
    const sentence = stringField(r, 'sentence');
    if (!sentence.includes('_')) throw new Error('field "sentence" has no "_" blank');
    const choices = [stringField(r, 'option1'), stringField(r, 'option2')];
    return {
      fields: { sentence },
      choices,
      gold: checkGold(integerField(r, 'answer') - 1, choices, 'answer'),
    };
  },
  docToText: '{{sentence}}',
  partial: {
    // One context per option: the sentence up to the blank with the option filled in.
    contexts: (doc) => {
      const { sentence, at } = blank(doc);
      return doc.choices.map((option) => sentence.slice(0, at) + option);
    },
    // The shared continuation: the text after the blank (the target delimiter " " goes before it).
    continuation: (doc) => {
      const { sentence, at } = blank(doc);
      return sentence.slice(at + 1).trim();
    },
  },
  ...COMMON,
  metrics: ['acc'],
  protocolNote:
    `${LM_EVAL} winogrande: partial scoring, one context per option (sentence up to "_" + option), ` +
    'shared continuation " " + (text after "_").strip(); acc',
};

function arc(name: 'arc_easy' | 'arc_challenge', config: 'ARC-Easy' | 'ARC-Challenge'): MultipleChoiceTask {
  return {
    name,
    protocol: 'loglikelihood',
    title: `AI2 ARC (${config}): grade-school science questions`,
    source: {
      hub: `allenai/ai2_arc (${config})`,
      dirs: [name, config, `ai2_arc/${config}`, `allenai/ai2_arc/${config}`],
      split: 'test',
      fewshotSplit: 'train',
      fields: ['question', 'choices.text', 'choices.label', 'answerKey'],
    },
    toDoc: (r) => ({
      fields: { question: stringField(r, 'question') },
      ...labelledChoices(r, stringField(r, 'answerKey')),
    }),
    docToText: 'Question: {{question}}\nAnswer:',
    ...COMMON,
    metrics: ['acc', 'acc_norm'],
    protocolNote: `${LM_EVAL} ${name}: loglikelihood of " " + choices.text[i]; acc, acc_norm`,
  };
}

const openbookqa: MultipleChoiceTask = {
  name: 'openbookqa',
  protocol: 'loglikelihood',
  title: 'OpenBookQA (main): elementary science with an open book of facts',
  source: {
    hub: 'allenai/openbookqa (main)',
    dirs: ['openbookqa', 'openbookqa/main', 'allenai/openbookqa/main'],
    split: 'test',
    fewshotSplit: 'train',
    fields: ['question_stem', 'choices.text', 'choices.label', 'answerKey'],
  },
  toDoc: (r) => ({
    fields: { question_stem: stringField(r, 'question_stem') },
    ...labelledChoices(r, stringField(r, 'answerKey').trimStart()),
  }),
  docToText: '{{question_stem}}',
  ...COMMON,
  metrics: ['acc', 'acc_norm'],
  protocolNote: `${LM_EVAL} openbookqa: loglikelihood of " " + choices.text[i] after question_stem; acc, acc_norm`,
};

const mmlu: MultipleChoiceTask = {
  name: 'mmlu',
  protocol: 'loglikelihood',
  title: 'MMLU: 57 subjects, four-choice questions, k shots from the dev split',
  source: {
    hub: 'cais/mmlu (all)',
    dirs: ['mmlu/all', 'cais/mmlu/all', 'mmlu', 'cais/mmlu'],
    split: 'test',
    fewshotSplit: 'dev',
    fields: ['question', 'subject', 'choices', 'answer'],
  },
  toDoc: (r) => {
    const subject = stringField(r, 'subject');
    if (!(MMLU_SUBJECTS as readonly string[]).includes(subject)) {
      throw new Error(`field "subject" is "${subject}", not one of the 57 MMLU subjects`);
    }
    const choices = stringListField(r, 'choices');
    if (choices.length !== 4) throw new Error(`field "choices" has ${choices.length} entries, not 4`);
    return {
      fields: { question: stringField(r, 'question'), subject, choices },
      choices: ['A', 'B', 'C', 'D'],
      gold: checkGold(integerField(r, 'answer'), choices, 'answer'),
    };
  },
  description:
    'The following are multiple choice questions (with answers) about {{subject.replace("_", " ")}}.\n\n',
  docToText:
    '{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:',
  targetDelimiter: ' ',
  fewshotDelimiter: '\n\n',
  shots: 5,
  fewshotSampler: 'first_n',
  metrics: ['acc'],
  groupOf: (doc) => doc.fields.subject as string,
  protocolNote:
    `${LM_EVAL} mmlu_<subject>: loglikelihood of " A".." D"; shots: the first k of the subject's dev split; ` +
    'acc = micro average over all items (lm-eval weight_by_size), acc_macro = mean of the subject accuracies ' +
    '(QLoRA reports this one)',
};

/** LLM-Adapters' evaluation prompt (commonsense_evaluate.py generate_prompt, input empty), byte for byte. */
const LLM_ADAPTERS_EVAL_PROMPT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request. ' +
  '\n\n                ### Instruction:\n                {{instruction}}\n\n                ### Response:\n' +
  '                ';

function generation(name: string, dataset: string, answerRegex: string, title: string): GenerationTask {
  return {
    name,
    protocol: 'generation',
    title: `${title} (LLM-Adapters generation protocol)`,
    source: {
      hub: `AGI-Edgerunners/LLM-Adapters dataset/${dataset}/test.json`,
      dirs: [`dataset/${dataset}`, `LLM-Adapters/dataset/${dataset}`],
      split: 'test',
      fields: ['instruction', 'answer'],
    },
    toDoc: (r) => ({
      fields: { instruction: stringField(r, 'instruction') },
      answer: stringField(r, 'answer'),
    }),
    promptTemplate: LLM_ADAPTERS_EVAL_PROMPT,
    answerRegex,
    cutAt: '### Response:',
    maxNewTokens: 32,
    numBeams: 4,
    protocolNote:
      'LLM-Adapters @8166572 commonsense_evaluate.py: Alpaca-wrapped instruction, beam search (4 beams, ' +
      `max_new_tokens 32), output cut at "### Response:" and stripped, first match of /${answerRegex}/, ` +
      'exact match with "answer" (no match = wrong)',
  };
}

const ANSWERS = 'answer1|answer2|answer3|answer4|answer5';

/** Every built-in task by name. */
export const BUILTIN_TASKS: ReadonlyMap<string, TaskDefinition> = new Map(
  [
    boolq,
    piqa,
    siqa,
    hellaswag,
    winogrande,
    arc('arc_easy', 'ARC-Easy'),
    arc('arc_challenge', 'ARC-Challenge'),
    openbookqa,
    mmlu,
    generation('boolq-gen', 'boolq', 'true|false', 'BoolQ'),
    generation('piqa-gen', 'piqa', 'solution1|solution2', 'PIQA'),
    generation('siqa-gen', 'social_i_qa', ANSWERS, 'Social IQa'),
    generation('hellaswag-gen', 'hellaswag', 'ending1|ending2|ending3|ending4', 'HellaSwag'),
    generation('winogrande-gen', 'winogrande', 'option1|option2', 'WinoGrande'),
    generation('arc_easy-gen', 'ARC-Easy', ANSWERS, 'ARC-Easy'),
    generation('arc_challenge-gen', 'ARC-Challenge', ANSWERS, 'ARC-Challenge'),
    generation('openbookqa-gen', 'openbookqa', ANSWERS, 'OpenBookQA'),
  ].map((t) => [t.name, t]),
);
