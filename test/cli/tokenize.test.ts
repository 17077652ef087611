// `moka tokenize` and the token ids of `moka score --json` (issue 10, item 8), as a user runs them.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTinyCheckpoint } from '../../lib/model/tiny-checkpoint.ts';
import { buildTinyTokenizer } from '../../lib/model/tiny-tokenizer.ts';
import { llama3Files } from '../helpers/real-tokenizers.ts';
import { runMoka } from '../helpers/run-moka.ts';

const root = mkdtempSync(join(tmpdir(), 'moka-tokenize-cli-'));
const tiny = join(root, 'tiny');
const llama3 = join(root, 'llama3-tokenizer-only');
afterAll(() => rmSync(root, { recursive: true, force: true }));

beforeAll(async () => {
  await writeTinyCheckpoint({ dir: tiny, seed: 3 });
  // Tokenizer files alone (no config.json, no weights): the first Llama 3 release, whose post-processor adds no BOS.
  const files = llama3Files('3');
  mkdirSync(llama3);
  writeFileSync(join(llama3, 'tokenizer.json'), JSON.stringify(files.tokenizerJson));
  writeFileSync(join(llama3, 'tokenizer_config.json'), JSON.stringify(files.tokenizerConfig));
});

const { bosId, eotId } = buildTinyTokenizer();

describe('moka tokenize', () => {
  it('--json: ids, pieces, texts and special tokens', () => {
    const r = runMoka(['tokenize', '--model', tiny, '--text', 'The sky is', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ids).toEqual([507, 334, 261, 107, 121, 283]);
    expect(out.tokens[0]).toEqual({
      id: bosId,
      piece: '<|begin_of_text|>',
      text: '<|begin_of_text|>',
      special: true,
    });
    expect(out.tokens[5]).toEqual({ id: 283, piece: 'Ġis', text: ' is', special: false });
  });

  it('--chat renders the chat template with the generation prompt; the table marks special tokens', () => {
    const r = runMoka(['tokenize', '--model', tiny, '--text', 'Hi', '--chat']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(
      '21 tokens (6 special) for "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\\n\\n"',
    );
    expect(lines).toContain(`${eotId}  special  "<|eot_id|>"`);
    expect(lines).toContain(' 10           "Ċ"  → "\\n"');
  });

  it('a tokenizer that names a bos_token but adds none gets a one-line notice (no weights needed)', () => {
    const r = runMoka(['tokenize', '--model', llama3, '--text', 'How are you doing?', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^notice: .*names bos_token "<\|begin_of_text\|>", but encoding adds none/);
    expect(JSON.parse(r.stdout).ids).toEqual([4438, 527, 499, 3815, 30]);
  });

  it('errors in one line', () => {
    const r = runMoka(['tokenize', '--model', join(root, 'nope'), '--text', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^moka: error: .*nope: no such directory/);
    const s = runMoka(['tokenize', '--model', tiny, '--text', 'x', '--system', 'y']);
    expect(s.code).toBe(1);
    expect(s.stderr.trim()).toBe('moka: error: --system needs --chat');
  });
});

describe('moka score --json', () => {
  it("prints the context ids and each choice's continuation ids", () => {
    const r = runMoka(['score', '--model', tiny, '--context', 'The sky is', '--choice', ' blue', '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.contextIds).toEqual([507, 334, 261, 107, 121, 283]);
    expect(out.choices[0]).toMatchObject({ text: ' blue', tokens: 4, continuationIds: [289, 108, 117, 101] });
  });

  it('a choice merged into the context is a one-line error saying how to move the boundary', () => {
    const r = runMoka(['score', '--model', tiny, '--context', 'The sky is th', '--choice', 'e']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(
      /^moka: error: --choice "e": the continuation "e" merges into the context's last token.*context "The sky is", continuation " the"/,
    );
  });
});
