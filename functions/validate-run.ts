/**
 * Lambda: the state machine's ValidateRun step (lib/pipeline/handlers.ts `validateRunInput`). The artifact store
 * is the bucket named by MOKA_ARTIFACT_URI (e.g. s3://my-bucket); the event is the execution input (a run config,
 * or {"configUri": "s3://…"}). Logs one JSON line; a bad config fails the execution with every problem listed.
 */
import { validateRunInput, type PipelineDeps } from '../lib/pipeline/handlers.ts';
import { openStore } from '../lib/pipeline/store/index.ts';

export function defaultDeps(): PipelineDeps {
  const uri = process.env.MOKA_ARTIFACT_URI;
  if (!uri) throw new Error('MOKA_ARTIFACT_URI is not set (the artifact store root, e.g. s3://bucket)');
  return { store: openStore(uri) };
}

export async function handler(event: unknown) {
  const plan = await validateRunInput(event, defaultDeps());
  console.log(JSON.stringify({ event: 'run.validated', ...plan }));
  return plan;
}
