/**
 * Lambda: the state machine's Finalize and RecordFailure steps (lib/pipeline/handlers.ts `finalizeRun`): records
 * the run's outcome in status.json and returns the execution's output summary. Store: MOKA_ARTIFACT_URI.
 */
import { finalizeRun } from '../lib/pipeline/handlers.ts';
import { defaultDeps } from './validate-run.ts';

export async function handler(event: unknown) {
  const summary = await finalizeRun(event, defaultDeps());
  console.log(JSON.stringify({ event: 'run.finalized', ...summary }));
  return summary;
}
