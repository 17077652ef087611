// A chat template that renders today's date (Llama 3.2's strftime_now) must not make a run unresumable the next day
// (issue 10, item 6): the clock is pinned at the run's start and recorded in train-config.json; a refused resume
// names what changed and the newest checkpoint.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseAdapterConfig } from '../../lib/adapters/adapter-config.ts';
import { UserError } from '../../lib/errors.ts';
import { strftime, wallClockNow } from '../../lib/model/chat-template.ts';
import { openTokenizer } from '../../lib/model/checkpoint.ts';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { runTraining } from '../../lib/train/run-training.ts';
import { parseTrainConfig } from '../../lib/train/train-config.ts';

/** Llama 3.2 Instruct's date and system-header logic (its tool-calling branches left out). */
const LLAMA32_TEMPLATE =
  '{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}' +
  '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}' +
  "{%- endif %}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}" +
  '{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}' +
  '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Cutting Knowledge Date: December 2023\\n" }}' +
  '{{- "Today Date: " + date_string + "\\n\\n" }}{{- system_message }}{{- "<|eot_id|>" }}' +
  "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + " +
  "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}" +
  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

const root = mkdtempSync(join(tmpdir(), 'moka-chat-clock-'));
const model = join(root, 'tiny');
const data = join(root, 'chat.jsonl');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const records = Array.from({ length: 12 }, (_, i) => ({
  messages: [
    { role: 'user', content: `What is ${i} plus ${i}?` },
    { role: 'assistant', content: `It is ${2 * i}.` },
  ],
}));

beforeAll(async () => {
  await writeTinyCheckpoint({
    dir: model,
    seed: 2,
    numLayers: 1,
    hiddenSize: 32,
    maxPositionEmbeddings: 128,
  });
  const path = join(model, 'tokenizer_config.json');
  const config = JSON.parse(readFileSync(path, 'utf8'));
  writeFileSync(path, JSON.stringify({ ...config, chat_template: LLAMA32_TEMPLATE }));
  writeFileSync(data, records.map((r) => JSON.stringify(r)).join('\n'));
});

const DAY1 = new Date(2026, 10, 30, 23, 59, 0);
const DAY2 = new Date(2026, 11, 1, 9, 0, 0);

// The machine's clock is faked (Date only): a run started on day 1 is resumed on day 2.
afterEach(() => vi.useRealTimers());

function run(out: string, now: Date, stopAfterStep?: number) {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(now);
  const stop = new AbortController();
  return runTraining({
    modelDir: model,
    train: [data],
    outputDir: join(root, out),
    training: parseTrainConfig({
      seed: 1,
      maxSteps: 4,
      microBatchSize: 4,
      maxLength: 96,
      evalRecords: 2,
      evalEvery: 100,
      checkpointEvery: 2,
    }),
    adapter: parseAdapterConfig({ type: 'lora', r: 2 }),
    intraOpThreads: 1,
    progress: 'none',
    handleSignals: false,
    warn: () => {},
    stopSignal: stop.signal,
    checkpointHooks: {
      afterFile: (step) => {
        if (step === stopAfterStep) stop.abort();
      },
    },
  });
}

describe('a template that renders the date', () => {
  it('renders the pinned clock, in the C locale of Python strftime', async () => {
    const tok = await openTokenizer(model);
    const messages = records[0]!.messages;
    expect(tok.renderChat(messages, { clock: wallClockNow(DAY1) })).toContain('Today Date: 30 Nov 2026\n');
    expect(tok.renderChat(messages, { clock: wallClockNow(DAY2) })).toContain('Today Date: 01 Dec 2026\n');
    expect(strftime('2026-03-07T05:04:09', '%A %a %B %b %d %e %j %H:%M:%S %I %p %y %Y %% %Q')).toBe(
      'Saturday Sat March Mar 07  7 066 05:04:09 05 AM 26 2026 % %Q',
    );
  });

  it('a run started one day resumes the next; the clock is recorded in train-config.json', async () => {
    const first = await run('run', DAY1, 2);
    expect(first.stoppedBy).toBe('signal');
    const second = await run('run', DAY2);
    const recorded = JSON.parse(readFileSync(join(root, 'run', 'train-config.json'), 'utf8'));
    expect(recorded.chatClock).toBe('2026-11-30T23:59:00');
    expect(second.resumedFrom).toBe(first.step);
    expect(second.stoppedBy).toBe('completed');
    expect(second.step).toBe(4);
    // An uninterrupted run started on day 1 ends with the same adapter.
    const whole = await run('whole', DAY1);
    for (const [name, value] of whole.params) expect(second.params.get(name)).toEqual(value);
  });

  it('a resume refused for changed data names the newest checkpoint and the data', async () => {
    const checkpoints = readdirSync(join(root, 'run', 'checkpoints')).sort();
    expect(checkpoints).toEqual(['step-2', 'step-4']);
    writeFileSync(
      data,
      records
        .map((r, i) =>
          JSON.stringify(
            i === 3 ? { ...r, messages: [r.messages[0], { role: 'assistant', content: 'Six.' }] } : r,
          ),
        )
        .join('\n'),
    );
    const err = await run('run', DAY2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).toMatch(
      /step-4 \(the newest of 2 checkpoint\(s\)\) belongs to a different run: the tokenized data changed/,
    );
    expect(msg).toMatch(/data: the tokens of the training\/eval samples differ/);
    expect(msg).not.toMatch(/step-2/);
    expect(msg).toMatch(/restore the tokenized data to resume/);
  });
});
