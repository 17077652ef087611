/** `moka schema`: the run config's JSON Schema (zod's export; input side: defaults shown, defaulted fields optional). */
import type { Command } from 'commander';
import { runConfigJsonSchema } from '../../lib/pipeline/run-config.ts';

export function registerSchema(program: Command): void {
  program
    .command('schema')
    .description('print the JSON Schema of the run config (the input of moka run and of the AWS pipeline)')
    .action(() => {
      process.stdout.write(`${JSON.stringify(runConfigJsonSchema(), null, 2)}\n`);
    });
}
