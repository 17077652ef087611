/**
 * The files of a model directory that are not weights or config.json but belong with the model: tokenizer
 * files, generation config, chat templates, and the licence and usage-policy files that model licences (e.g.
 * Llama's) require to travel with every copy. Quantize and dequantize copy them byte for byte.
 */
import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

const SIDECAR =
  /^(tokenizer(\.json|\.model|_config\.json)|special_tokens_map\.json|added_tokens\.json|vocab\.json|merges\.txt|generation_config\.json|chat_template\.(jinja|json)|(LICENSE|LICENCE|NOTICE|USE_POLICY|README)(\.[A-Za-z]+)?)$/;

export function isSidecarFile(name: string): boolean {
  return SIDECAR.test(name);
}

/** Copies the sidecar files of `fromDir` into `toDir`; returns their names. */
export async function copySidecarFiles(fromDir: string, toDir: string): Promise<string[]> {
  const copied: string[] = [];
  for (const entry of await readdir(fromDir, { withFileTypes: true })) {
    if (!entry.isFile() || !isSidecarFile(entry.name)) continue;
    await copyFile(join(fromDir, entry.name), join(toDir, entry.name));
    copied.push(entry.name);
  }
  return copied.sort();
}
