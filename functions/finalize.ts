/**
 * Lambda: the state machine's Finalize and RecordFailure steps (lib/pipeline/handlers.ts `finalizeRun`): records
 * the run's outcome in status.json and returns the execution's output summary. Store: MOKA_ARTIFACT_URI.
 */
import { finalizeRun } from '../lib/pipeline/handlers.ts';
import { jsonLogger } from '../lib/pipeline/json-log.ts';
import { defaultDeps } from './validate-run.ts';

const log = jsonLogger();

export async function handler(event: unknown) {
  try {
    const summary = await finalizeRun(event, defaultDeps());
    log(summary.status === 'FAILED' ? 'warn' : 'info', `run ${summary.status.toLowerCase()}`, {
      event: 'run.finalized',
      ...summary,
    });
    return summary;
  } catch (err) {
    log('error', 'finalize failed', { event: 'run.finalize-failed', error: err as Error });
    throw err;
  }
}
