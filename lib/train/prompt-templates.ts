/**
 * Named prompt templates for instruction records (`instruction`, optional `input`, `output`). A template renders the
 * PROMPT; the response (the record's `output`) follows it directly, then EOS. Each template has a variant with and
 * without input, chosen as the original code chooses it: with input when `input` is a non-empty string.
 *
 * The strings are copied character for character from the code each name refers to (see docs/training.md):
 * - `alpaca`: tatsu-lab/stanford_alpaca train.py PROMPT_DICT ("### Response:" with nothing after it).
 * - `alpaca-qlora`: artidoro/qlora qlora.py ALPACA_PROMPT_DICT (the same text with a space after "### Response:").
 * - `llm-adapters`: AGI-Edgerunners/LLM-Adapters finetune.py generate_prompt, including the 16 spaces of Python
 *   source indentation that its f-strings keep, the extra spaces after "request." (two without input, one with)
 *   and the indented blank lines; the commonsense_170k recipes (LLM-Adapters, DoRA) train with it.
 * - `plain`: no framing: the instruction, a blank line and the input when there is one, then a newline.
 */

export const PROMPT_TEMPLATE_NAMES = ['alpaca', 'alpaca-qlora', 'llm-adapters', 'plain'] as const;
export type PromptTemplateName = (typeof PROMPT_TEMPLATE_NAMES)[number];

export interface PromptTemplate {
  name: PromptTemplateName;
  /** Where the exact text comes from. */
  origin: string;
  render(instruction: string, input: string): string;
}

const ALPACA_HEAD_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n';
const ALPACA_HEAD_NO_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n';

/** The 16 spaces of source indentation inside LLM-Adapters' triple-quoted f-strings. */
const IND = ' '.repeat(16);

export const PROMPT_TEMPLATES: Readonly<Record<PromptTemplateName, PromptTemplate>> = {
  alpaca: {
    name: 'alpaca',
    origin: 'tatsu-lab/stanford_alpaca train.py PROMPT_DICT',
    render: (instruction, input) =>
      input !== ''
        ? `${ALPACA_HEAD_INPUT}### Instruction:\n${instruction}\n\n### Input:\n${input}\n\n### Response:`
        : `${ALPACA_HEAD_NO_INPUT}### Instruction:\n${instruction}\n\n### Response:`,
  },
  'alpaca-qlora': {
    name: 'alpaca-qlora',
    origin: 'artidoro/qlora qlora.py ALPACA_PROMPT_DICT',
    render: (instruction, input) =>
      input !== ''
        ? `${ALPACA_HEAD_INPUT}### Instruction:\n${instruction}\n\n### Input:\n${input}\n\n### Response: `
        : `${ALPACA_HEAD_NO_INPUT}### Instruction:\n${instruction}\n\n### Response: `,
  },
  'llm-adapters': {
    name: 'llm-adapters',
    origin: 'AGI-Edgerunners/LLM-Adapters finetune.py generate_prompt',
    render: (instruction, input) =>
      input !== ''
        ? 'Below is an instruction that describes a task, paired with an input that provides further context. ' +
          'Write a response that appropriately completes the request. \n\n' +
          `${IND}### Instruction:\n${IND}${instruction}\n${IND}\n` +
          `${IND}### Input:\n${IND}${input}\n${IND}\n` +
          `${IND}### Response:\n${IND}`
        : 'Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n' +
          `${IND}### Instruction:\n${IND}${instruction}\n${IND}\n` +
          `${IND}### Response:\n${IND}`,
  },
  plain: {
    name: 'plain',
    origin: 'moka',
    render: (instruction, input) => (input !== '' ? `${instruction}\n\n${input}\n` : `${instruction}\n`),
  },
};

/** The prompt text of an instruction record under a named template. */
export function renderPrompt(name: PromptTemplateName, instruction: string, input: string): string {
  return PROMPT_TEMPLATES[name].render(instruction, input);
}

/**
 * The template `auto` picks: commonsense_170k records are trained with LLM-Adapters' text (the protocol their
 * published numbers use); other instruction records with Stanford Alpaca's.
 */
export function defaultTemplateFor(format: 'alpaca' | 'commonsense'): PromptTemplateName {
  return format === 'commonsense' ? 'llm-adapters' : 'alpaca';
}
