/**
 * Generates the example datasets in this folder, deterministically (fixed seed, fixed word lists):
 *
 *   tiny-instructions.jsonl   200 Alpaca-style records (instruction, input, output) over six small tasks
 *   commonsense-sample.json   24 records in LLM-Adapters' commonsense_170k format (instruction, input, output, answer)
 *   tiny-chat.jsonl           24 chat records (messages with system, user and assistant turns)
 *
 * The records are synthetic: short, regular and learnable by a tiny model in a few hundred steps, which is what
 * the training tests and a first `moka train` on a tiny checkpoint need. Regenerate with
 * `node --import tsx examples/data/generate.ts` (test/train/examples.test.ts checks the files match).
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { mulberry32 } from '../../lib/engine/random.ts';

export interface InstructionRecord {
  instruction: string;
  input: string;
  output: string;
}

export interface CommonsenseRecord extends InstructionRecord {
  answer: string;
}

export interface ChatRecord {
  messages: { role: string; content: string }[];
}

const THINGS: [string, string][] = [
  ['sky', 'blue'],
  ['grass', 'green'],
  ['snow', 'white'],
  ['coal', 'black'],
  ['banana', 'yellow'],
  ['tomato', 'red'],
  ['orange', 'orange'],
  ['plum', 'purple'],
];
const CAPITALS: [string, string][] = [
  ['France', 'Paris'],
  ['Italy', 'Rome'],
  ['Spain', 'Madrid'],
  ['Japan', 'Tokyo'],
  ['Egypt', 'Cairo'],
  ['Peru', 'Lima'],
  ['Kenya', 'Nairobi'],
  ['Canada', 'Ottawa'],
];
const OPPOSITES: [string, string][] = [
  ['hot', 'cold'],
  ['up', 'down'],
  ['early', 'late'],
  ['big', 'small'],
  ['fast', 'slow'],
  ['light', 'dark'],
  ['open', 'closed'],
  ['full', 'empty'],
];
const WORDS = ['model', 'adapter', 'weight', 'layer', 'token', 'matrix', 'gate', 'batch', 'train', 'loss'];

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)]!;
}

/** The 200 records of tiny-instructions.jsonl. */
export function tinyInstructionRecords(count = 200, seed = 7): InstructionRecord[] {
  const rand = mulberry32(seed);
  const out: InstructionRecord[] = [];
  for (let i = 0; i < count; i++) {
    switch (i % 6) {
      case 0: {
        const [thing, color] = pick(rand, THINGS);
        out.push({
          instruction: `What color is the ${thing}?`,
          input: '',
          output: `The ${thing} is ${color}.`,
        });
        break;
      }
      case 1: {
        const [country, capital] = pick(rand, CAPITALS);
        out.push({
          instruction: `Name the capital of ${country}.`,
          input: '',
          output: `The capital of ${country} is ${capital}.`,
        });
        break;
      }
      case 2: {
        const a = Math.floor(rand() * 50);
        const b = Math.floor(rand() * 50);
        out.push({ instruction: `Add ${a} and ${b}.`, input: '', output: `${a} plus ${b} equals ${a + b}.` });
        break;
      }
      case 3: {
        const n = 2 + Math.floor(rand() * 5);
        const sentence = Array.from({ length: n }, () => pick(rand, WORDS)).join(' ');
        out.push({
          instruction: 'Count the words in the input.',
          input: sentence,
          output: `The input has ${n} words.`,
        });
        break;
      }
      case 4: {
        const word = pick(rand, WORDS);
        out.push({
          instruction: 'Write the word in capital letters.',
          input: word,
          output: word.toUpperCase(),
        });
        break;
      }
      default: {
        const [word, opposite] = pick(rand, OPPOSITES);
        out.push({
          instruction: `Give the opposite of ${word}.`,
          input: '',
          output: `The opposite of ${word} is ${opposite}.`,
        });
      }
    }
  }
  return out;
}

/** commonsense-sample.json: the LLM-Adapters instruction formats with synthetic questions. */
export function commonsenseSampleRecords(seed = 11): CommonsenseRecord[] {
  const rand = mulberry32(seed);
  const facts: [string, boolean][] = [
    ['is ice colder than steam', true],
    ['can a fish breathe air through its gills on land', false],
    ['is the sun a star', true],
    ['do spiders have six legs', false],
    ['is paris the capital of france', true],
    ['is a tomato a vegetable in botany', false],
  ];
  const goals: [string, string, string][] = [
    ['To keep bread fresh', 'store it in a sealed bag', 'leave it open on the table'],
    ['To cool hot soup', 'stir it and let it rest', 'put it in the oven'],
    ['To dry wet shoes', 'stuff them with newspaper', 'fill them with water'],
    ['To light a dark room', 'switch on a lamp', 'close the curtains'],
    ['To clean a dirty cup', 'wash it with soap', 'paint it white'],
    ['To sharpen a pencil', 'use a sharpener', 'use a spoon'],
  ];
  const questions: [string, string[], number][] = [
    ['Which of these is a mammal?', ['shark', 'whale', 'trout', 'eel'], 2],
    ['Which gas do plants take in?', ['oxygen', 'helium', 'carbon dioxide', 'neon'], 3],
    ['What melts ice fastest?', ['salt', 'sand', 'sugar cubes in a box', 'wood'], 1],
    ['Which object is magnetic?', ['an iron nail', 'a glass cup', 'a rubber ball', 'a paper sheet'], 1],
    ['What makes a shadow?', ['blocking light', 'adding water', 'making noise', 'heating air'], 1],
    ['Which is a source of energy?', ['the sun', 'a shadow', 'a stone', 'a mirror'], 1],
  ];
  const blanks: [string, string, string, number][] = [
    ['The cup fell off the table because _ was too close to the edge.', 'the cup', 'the table', 1],
    ['Sam gave Alex the umbrella because _ was going out in the rain.', 'Sam', 'Alex', 2],
    ['The box did not fit in the car because _ was too big.', 'the box', 'the car', 1],
    ['Maria taught Ana to swim because _ knew how.', 'Maria', 'Ana', 1],
    ['The ice cube melted in the glass because _ was warm.', 'the ice cube', 'the glass', 2],
    ['The dog chased the cat until _ climbed a tree.', 'the dog', 'the cat', 2],
  ];
  const out: CommonsenseRecord[] = [];
  for (const [q, truth] of facts) {
    const answer = String(truth);
    out.push({
      instruction: `Please answer the following question with true or false, question: ${q}?\n\nAnswer format: true/false`,
      input: '',
      output: `the correct answer is ${answer}`,
      answer,
    });
  }
  for (const [goal, good, bad] of goals) {
    const first = rand() < 0.5;
    const answer = first ? 'solution1' : 'solution2';
    const [s1, s2] = first ? [good, bad] : [bad, good];
    out.push({
      instruction:
        `Please choose the correct solution to the question: ${goal}\n\nSolution1: ${s1}\n\nSolution2: ${s2}` +
        '\n\nAnswer format: solution1/solution2',
      input: '',
      output: `the correct answer is ${answer}`,
      answer,
    });
  }
  for (const [q, options, correct] of questions) {
    const listed = options.map((o, k) => `Answer${k + 1}: ${o}`).join(' ');
    const answer = `answer${correct}`;
    out.push({
      instruction:
        `Please choose the correct answer to the question: ${q}\n\n${listed}\n\n` +
        'Answer format: answer1/answer2/answer3/answer4',
      input: '',
      output: `the correct answer is ${answer}`,
      answer,
    });
  }
  for (const [sentence, o1, o2, correct] of blanks) {
    const answer = `option${correct}`;
    out.push({
      instruction:
        `Please choose the correct answer to fill in the blank to complete the given sentence: ${sentence}\n\n` +
        `Option1: ${o1} Option2: ${o2} Answer format: option1/option2`,
      input: '',
      output: `the correct answer is ${answer}`,
      answer,
    });
  }
  return out;
}

/** tiny-chat.jsonl: short conversations, some with a system turn and two exchanges. */
export function tinyChatRecords(count = 24, seed = 13): ChatRecord[] {
  const rand = mulberry32(seed);
  const out: ChatRecord[] = [];
  for (let i = 0; i < count; i++) {
    const [thing, color] = pick(rand, THINGS);
    const [country, capital] = pick(rand, CAPITALS);
    const messages = [
      ...(i % 3 === 0 ? [{ role: 'system', content: 'You answer in one short sentence.' }] : []),
      { role: 'user', content: `What color is the ${thing}?` },
      { role: 'assistant', content: `The ${thing} is ${color}.` },
    ];
    if (i % 2 === 1) {
      messages.push(
        { role: 'user', content: `And the capital of ${country}?` },
        { role: 'assistant', content: `The capital of ${country} is ${capital}.` },
      );
    }
    out.push({ messages });
  }
  return out;
}

export const EXAMPLE_FILES = {
  'tiny-instructions.jsonl': () =>
    tinyInstructionRecords()
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
  'commonsense-sample.json': () => `${JSON.stringify(commonsenseSampleRecords(), null, 2)}\n`,
  'tiny-chat.jsonl': () =>
    tinyChatRecords()
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
} as const;

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = dirname(fileURLToPath(import.meta.url));
  for (const [name, make] of Object.entries(EXAMPLE_FILES)) {
    writeFileSync(join(dir, name), make());
    process.stdout.write(`wrote ${join(dir, name)}\n`);
  }
}
