/**
 * What every stage shares: the run's store and config, a local work folder, fetching inputs named by URI to
 * local paths, and recording the stage in status.json. A stage's work is a plain function of its context, so
 * `moka stage`, the container and the local runner all run the same code.
 */
import { createHash } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../errors.ts';
import { parseRunConfig, type RunConfig } from '../run-config.ts';
import { openRun, runKeys } from '../run-layout.ts';
import { recordStage, type StageRecord } from '../status.ts';
import {
  COMPLETE_MARKER,
  localPathOfUri,
  openStore,
  pathExists,
  readJson,
  splitUri,
  type ArtifactStore,
  type OpenStoreOptions,
} from '../store/index.ts';
import type { StageName } from '../state-names.ts';

export interface StageOptions {
  /** `<store>/runs/<runId>`. */
  runUri: string;
  /** Variant name (train, eval); `base` for the un-adapted model's evaluation. */
  variant?: string;
  /** Local scratch folder (default $MOKA_WORK_DIR or <tmp>/moka-work). */
  workDir?: string;
  /** Options for the stores the stage opens (S3 endpoint, client). */
  storeOptions?: OpenStoreOptions;
  /** Progress lines (default stderr). */
  log?: (line: string) => void;
  /** Progress display of long work. */
  progress?: 'auto' | 'bar' | 'json' | 'none';
  /** Stop request (SIGTERM in a container): training checkpoints and stops. */
  stopSignal?: AbortSignal;
}

export interface StageOutcome {
  stage: StageName;
  variant?: string;
  /** 'skipped' when its completion marker already existed (nothing was done). */
  status: 'SUCCEEDED' | 'SKIPPED';
  detail?: string;
  result?: Record<string, unknown>;
}

export interface ModelRecord {
  /** The source checkpoint's URI. */
  source: string;
  /** The quantized cache entry the stages use, or null when the run trains on the float model. */
  quantized: { key: string; uri: string } | null;
}

export class StageContext {
  readonly store: ArtifactStore;
  readonly runId: string;
  readonly keys: ReturnType<typeof runKeys>;
  readonly workDir: string;
  readonly log: (line: string) => void;
  private readonly scratchDirs: string[] = [];

  private constructor(
    readonly opts: StageOptions,
    readonly config: RunConfig,
    loc: { store: ArtifactStore; runId: string },
  ) {
    this.store = loc.store;
    this.runId = loc.runId;
    this.keys = runKeys(loc.runId);
    this.workDir = join(opts.workDir ?? process.env.MOKA_WORK_DIR ?? join(tmpdir(), 'moka-work'), loc.runId);
    this.log = opts.log ?? ((line) => process.stderr.write(`${line}\n`));
  }

  /** Opens the run and reads its config.json (written by the validate step). */
  static async open(opts: StageOptions): Promise<StageContext> {
    const loc = openRun(opts.runUri, opts.storeOptions);
    const configKey = runKeys(loc.runId).config;
    const raw = await readJson<unknown>(loc.store, configKey);
    if (raw === null) {
      throw new UserError(
        `${loc.store.uriOf(configKey)} does not exist: the run was not validated (start it with moka run)`,
      );
    }
    return new StageContext(opts, parseRunConfig(raw, loc.store.uriOf(configKey)), loc);
  }

  /** The store holding an arbitrary URI's folder or object. */
  storeFor(uri: string): ArtifactStore {
    return openStore(uri, this.opts.storeOptions);
  }

  async modelRecord(): Promise<ModelRecord> {
    const m = await readJson<ModelRecord>(this.store, this.keys.model);
    if (!m) throw new UserError(`${this.store.uriOf(this.keys.model)} is missing: the run was not validated`);
    return m;
  }

  /**
   * A local path holding what `uri` names (a file or a folder). Local URIs are used in place; S3 objects and
   * prefixes are downloaded once into the work folder (a marker makes the copy reusable by later stages).
   */
  async fetch(uri: string): Promise<string> {
    if (!uri.startsWith('s3://')) return localPathOfUri(uri);
    const [parent, name] = splitUri(uri);
    const dest = join(
      this.workDir,
      'inputs',
      createHash('sha256').update(uri).digest('hex').slice(0, 16),
      name,
    );
    const marker = `${dest}.${COMPLETE_MARKER}`;
    if (await pathExists(marker)) return dest;
    const store = this.storeFor(parent);
    await rm(dest, { recursive: true, force: true });
    if (await store.exists(name)) {
      await store.getFile(name, dest);
    } else {
      const objects = await store.list(name);
      if (objects.length === 0) throw new UserError(`${uri} does not exist (no object and no folder)`);
      for (const o of objects) {
        if (o.key.split('/').pop() === COMPLETE_MARKER) continue;
        await store.getFile(o.key, join(dest, ...o.key.slice(name.length + 1).split('/')));
      }
    }
    await writeFile(marker, '');
    return dest;
  }

  /**
   * A fresh local folder for this stage's outputs (emptied first: the store, not the disk, is the truth). Removed
   * when the stage succeeds, since everything in it is then in the store; kept after a failure, for inspection.
   */
  async scratch(...parts: string[]): Promise<string> {
    const dir = join(this.workDir, ...parts);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    this.scratchDirs.push(dir);
    return dir;
  }

  /** Runs a stage body with its status recorded: RUNNING, then SUCCEEDED/SKIPPED or FAILED (error rethrown). */
  async run(
    stage: StageName,
    variant: string | undefined,
    body: () => Promise<StageOutcome>,
  ): Promise<StageOutcome> {
    const startedAt = new Date().toISOString();
    const base: StageRecord = { stage, ...(variant ? { variant } : {}), status: 'RUNNING', startedAt };
    await recordStage(this.store, this.runId, base);
    this.log(`[${this.runId}] ${stage}${variant ? ` ${variant}` : ''}: started`);
    try {
      const out = await body();
      for (const dir of this.scratchDirs.splice(0)) await rm(dir, { recursive: true, force: true });
      await recordStage(this.store, this.runId, {
        ...base,
        status: out.status,
        endedAt: new Date().toISOString(),
        ...(out.detail ? { detail: out.detail } : {}),
        ...(out.result ? { result: out.result } : {}),
      });
      this.log(
        `[${this.runId}] ${stage}${variant ? ` ${variant}` : ''}: ${out.status.toLowerCase()}${out.detail ? ` (${out.detail})` : ''}`,
      );
      return out;
    } catch (err) {
      await recordStage(this.store, this.runId, {
        ...base,
        status: 'FAILED',
        endedAt: new Date().toISOString(),
        error: (err as Error).message,
      }).catch(() => {});
      throw err;
    }
  }
}
