/**
 * Lambda: starts a run when a run config or a data set's `_READY` object is uploaded (EventBridge "Object
 * Created" events from the artifact bucket). The logic is lib/pipeline/upload-trigger.ts; this file reads the
 * settings the stack passes as environment variables and logs one JSON line per decision.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { SFNClient } from '@aws-sdk/client-sfn';
import { jsonLogger } from '../lib/pipeline/json-log.ts';
import {
  handleUpload,
  type ObjectCreatedEvent,
  type UploadOutcome,
  type UploadTriggerSettings,
} from '../lib/pipeline/upload-trigger.ts';

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`start-on-upload: the environment variable ${name} is not set (the stack sets it)`);
  return v;
}

/** The settings the stack gives the function (lib/infra/retrain-trigger.ts). */
export function settingsFromEnv(): UploadTriggerSettings {
  return {
    stateMachineArn: required('STATE_MACHINE_ARN'),
    bucket: required('BUCKET_NAME'),
    runsIncomingPrefix: required('RUNS_INCOMING_PREFIX'),
    datasetsPrefix: required('DATASETS_PREFIX'),
    triggersPrefix: required('TRIGGERS_PREFIX'),
  };
}

const s3 = new S3Client({});
const sfn = new SFNClient({});
const log = jsonLogger();

export async function handler(event: ObjectCreatedEvent): Promise<UploadOutcome> {
  try {
    return await handleUpload(event, { s3, sfn, log, settings: settingsFromEnv() });
  } catch (err) {
    log('error', 'start-on-upload failed; Lambda retries, then the event goes to the dead-letter queue', {
      error: err as Error,
      key: event.detail?.object?.key,
    });
    throw err;
  }
}
