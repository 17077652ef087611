/**
 * Lambda: the state machine's ValidateRun step (lib/pipeline/handlers.ts `validateRunInput`). The artifact store
 * is the bucket named by MOKA_ARTIFACT_URI (e.g. s3://my-bucket); the event is the execution input (a run config,
 * or {"configUri": "s3://…"}). Logs one JSON line; a bad config fails the execution with every problem listed.
 */
import { isUserError } from '../lib/errors.ts';
import { validateRunInput, type PipelineDeps } from '../lib/pipeline/handlers.ts';
import { jsonLogger } from '../lib/pipeline/json-log.ts';
import { openStore } from '../lib/pipeline/store/index.ts';

const log = jsonLogger();

export function defaultDeps(): PipelineDeps {
  const uri = process.env.MOKA_ARTIFACT_URI;
  if (!uri) throw new Error('MOKA_ARTIFACT_URI is not set (the artifact store root, e.g. s3://bucket)');
  return { store: openStore(uri) };
}

export async function handler(event: unknown) {
  try {
    const plan = await validateRunInput(event, defaultDeps());
    log('info', 'run validated', { event: 'run.validated', ...plan });
    return plan;
  } catch (err) {
    // A user error (bad config, missing input) fails the execution with its message; anything else is a bug.
    log(isUserError(err) ? 'warn' : 'error', 'run rejected', { event: 'run.rejected', error: err as Error });
    throw err;
  }
}
