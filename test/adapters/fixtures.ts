// Model configs shared by the adapter tests (the real LLaMA config.json files under test/fixtures/configs).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseLlamaConfig, type LlamaConfig } from '../../lib/model/config.ts';

export type FixtureName = 'llama-2-7b' | 'llama-3-8b' | 'llama-3.2-1b' | 'llama-3.2-3b';

export function fixturePath(name: FixtureName): string {
  return fileURLToPath(new URL(`../fixtures/configs/${name}.json`, import.meta.url));
}

export function loadFixture(name: FixtureName): LlamaConfig {
  return parseLlamaConfig(JSON.parse(readFileSync(fixturePath(name), 'utf8')), `${name}.json`);
}
