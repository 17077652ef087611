/**
 * Training checkpoints with exact resume: `checkpoints/step-N/` holds
 *
 *   adapter.safetensors     trainable parameters (F32, the program's names and shapes)
 *   optimizer.safetensors   AdamW moments: `exp_avg/<name>`, `exp_avg_sq/<name>` (F32)
 *   metrics.jsonl           the metrics log up to and including step N (a resumed run continues this file)
 *   trainer-state.json      step, data-loader position, scheduler, RNG, early stopping, config fingerprint
 *   COMPLETE                written LAST: the file list with sizes and SHA-256 checksums
 *
 * Every file is written to a temporary name, flushed and renamed; COMPLETE goes last, so a directory without a
 * valid COMPLETE (a process killed mid-write, a partial upload) is never resumed from. Older checkpoints are
 * deleted only after a new one is complete (COMPLETE first, so a half-deleted one is never taken as complete
 * either). Resume verifies every checksum and falls back to the next older complete checkpoint if one fails.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.ts';
import { makeDirs } from '../make-dirs.ts';
import { writeFileAtomic } from '../atomic-write.ts';
import { SafetensorsFile, writeSafetensors, type SafetensorsTensor } from '../model/safetensors.ts';
import type { TrainableSpec } from './step-program.ts';

export const ADAPTER_FILE = 'adapter.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const METRICS_FILE = 'metrics.jsonl';
export const STATE_FILE = 'trainer-state.json';
export const COMPLETE_MARKER = 'COMPLETE';
export const CHECKPOINT_FORMAT_VERSION = 1;

/** Everything besides tensors that a resumed run needs to continue bit-identically. */
export interface TrainerState {
  formatVersion: number;
  /** Optimizer steps completed. */
  step: number;
  totalSteps: number;
  /** Where the next micro-batch comes from: epoch and index into that epoch's seeded plan. */
  dataLoader: { epoch: number; microBatch: number };
  scheduler: { name: string; warmupSteps: number; totalSteps: number; numCycles: number; lastStep: number };
  optimizer: { step: number };
  /**
   * The data order and the held-out split are pure functions of (seed, stream, epoch), so the RNG state is the
   * seed and the epoch; nothing else in training draws random numbers.
   */
  rng: { algorithm: 'mulberry32'; seed: number; epoch: number };
  earlyStopping: { best: number | null; evalsWithoutImprovement: number };
  /** Set when the run ended (a restarted job then has nothing to do). */
  finished: null | 'completed' | 'early-stopping';
  /** Counted (loss) tokens trained on so far. */
  tokensSeen: number;
  lastEvalLoss: number | null;
  /** Wall seconds of training so far, over every resumed part (informational; not part of exact resume). */
  elapsedSec: number;
  /** The metrics log the checkpoint carries (lines and bytes of its metrics.jsonl). */
  metrics: { lines: number; bytes: number };
  /** SHA-256 of fingerprintInputs; a checkpoint is resumed only by a run with the same fingerprint. */
  fingerprint: string;
  fingerprintInputs: Record<string, unknown>;
}

export interface CheckpointContents {
  state: TrainerState;
  params: ReadonlyMap<string, Float32Array>;
  m: ReadonlyMap<string, Float32Array>;
  v: ReadonlyMap<string, Float32Array>;
  metricsText: string;
}

export interface CheckpointInfo {
  step: number;
  dir: string;
  complete: boolean;
}

export interface CompleteMarker {
  step: number;
  fingerprint: string;
  files: { name: string; bytes: number; sha256: string }[];
}

export interface CheckpointHooks {
  /** Test hook: called after each file of a checkpoint is in place (before COMPLETE), e.g. to crash there. */
  afterFile?(step: number, file: string): void | Promise<void>;
  /**
   * Called once a checkpoint is complete (COMPLETE written) and older ones are pruned, with the directory and the
   * steps of the checkpoints kept: the pipeline's train stage uploads it to the artifact store here.
   */
  afterCheckpoint?(step: number, dir: string, kept: readonly number[]): void | Promise<void>;
}

const STEP_DIR = /^step-(\d+)$/;

export function checkpointDirName(step: number): string {
  return `step-${step}`;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function fsyncDir(dir: string): Promise<void> {
  // Makes the renames durable; some filesystems refuse to fsync a directory, which only weakens durability.
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    /* best effort */
  }
}

function tensorList(
  specs: readonly TrainableSpec[],
  values: ReadonlyMap<string, Float32Array>,
  prefix = '',
): SafetensorsTensor[] {
  return specs.map((s) => {
    const data = values.get(s.name);
    if (!data) throw new Error(`checkpoint: no value for "${s.name}"`);
    return { name: prefix + s.name, dtype: 'F32', shape: [...s.shape], data };
  });
}

export class CheckpointStore {
  constructor(
    /** The `checkpoints/` directory. */
    readonly dir: string,
    private readonly specs: readonly TrainableSpec[],
    private readonly hooks: CheckpointHooks = {},
  ) {}

  /** Every step-N directory, oldest first, with whether its COMPLETE marker is present and readable. */
  async list(): Promise<CheckpointInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err; // ENOTDIR, EACCES…: the CLI names the path and the problem (userErrorFromFs)
    }
    const out: CheckpointInfo[] = [];
    for (const name of names) {
      const m = STEP_DIR.exec(name);
      if (!m) continue;
      const dir = join(this.dir, name);
      out.push({ step: Number(m[1]), dir, complete: (await this.readMarker(dir)) !== null });
    }
    return out.sort((a, b) => a.step - b.step);
  }

  private async readMarker(dir: string): Promise<CompleteMarker | null> {
    try {
      const marker = JSON.parse(await readFile(join(dir, COMPLETE_MARKER), 'utf8')) as CompleteMarker;
      return Array.isArray(marker.files) && typeof marker.fingerprint === 'string' ? marker : null;
    } catch {
      return null;
    }
  }

  /** The trainer state of a complete checkpoint (cheap: no tensors are read). */
  async readState(info: CheckpointInfo): Promise<TrainerState> {
    const path = join(info.dir, STATE_FILE);
    let state: TrainerState;
    try {
      state = JSON.parse(await readFile(path, 'utf8')) as TrainerState;
    } catch (err) {
      throw new UserError(`${path}: cannot read the trainer state (${(err as Error).message})`);
    }
    // Checked before anything else reads the state: another version's fields may mean something else.
    if (state?.formatVersion !== CHECKPOINT_FORMAT_VERSION) {
      throw new UserError(
        `${info.dir}: checkpoint format ${JSON.stringify(state?.formatVersion)}, this moka reads ` +
          `${CHECKPOINT_FORMAT_VERSION}; resume it with the moka version that wrote it, or start a new run directory`,
      );
    }
    return state;
  }

  /** Writes step-N (see the module comment) and then prunes to the newest `keep` complete checkpoints. */
  async save(contents: CheckpointContents, keep: number): Promise<string> {
    const step = contents.state.step;
    const dir = join(this.dir, checkpointDirName(step));
    // A directory of the same step can only be the leftover of an interrupted write (or of a run that was not
    // resumed from it): start it afresh.
    await rm(dir, { recursive: true, force: true });
    await makeDirs(dir);
    const meta = { format: 'pt', step: String(step) };
    const written: string[] = [];
    const done = async (file: string) => {
      written.push(file);
      await this.hooks.afterFile?.(step, file);
    };
    await writeSafetensors(join(dir, ADAPTER_FILE), tensorList(this.specs, contents.params), meta);
    await done(ADAPTER_FILE);
    await writeSafetensors(
      join(dir, OPTIMIZER_FILE),
      [
        ...tensorList(this.specs, contents.m, 'exp_avg/'),
        ...tensorList(this.specs, contents.v, 'exp_avg_sq/'),
      ],
      { ...meta, optimizer_step: String(contents.state.optimizer.step) },
    );
    await done(OPTIMIZER_FILE);
    await writeFileAtomic(join(dir, METRICS_FILE), contents.metricsText);
    await done(METRICS_FILE);
    await writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(contents.state, null, 2)}\n`);
    await done(STATE_FILE);
    const files = [];
    for (const name of written) {
      const path = join(dir, name);
      files.push({ name, bytes: (await stat(path)).size, sha256: await sha256File(path) });
    }
    const marker: CompleteMarker = { step, fingerprint: contents.state.fingerprint, files };
    await fsyncDir(dir);
    await writeFileAtomic(join(dir, COMPLETE_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
    await fsyncDir(dir);
    await this.prune(keep);
    if (this.hooks.afterCheckpoint) {
      const kept = (await this.list()).filter((c) => c.complete).map((c) => c.step);
      await this.hooks.afterCheckpoint(step, dir, kept);
    }
    return dir;
  }

  /**
   * Keeps the newest `keep` complete checkpoints; removes older complete ones and incomplete leftovers older than
   * the newest complete one (an incomplete one newer than that may be a write in progress elsewhere; it is
   * replaced when its step is reached again).
   */
  async prune(keep: number): Promise<void> {
    const all = await this.list();
    const complete = all.filter((c) => c.complete);
    const newest = complete.at(-1)?.step ?? -1;
    const drop = [
      ...complete.slice(0, Math.max(0, complete.length - keep)),
      ...all.filter((c) => !c.complete && c.step < newest),
    ];
    for (const c of drop) {
      await rm(join(c.dir, COMPLETE_MARKER), { force: true });
      await rm(c.dir, { recursive: true, force: true });
    }
  }

  /** Reads and verifies a complete checkpoint; throws a UserError naming the problem. */
  async load(info: CheckpointInfo): Promise<CheckpointContents> {
    const marker = await this.readMarker(info.dir);
    if (!marker) throw new UserError(`${info.dir}: no valid ${COMPLETE_MARKER} marker`);
    for (const f of marker.files) {
      const path = join(info.dir, f.name);
      let size: number;
      try {
        size = (await stat(path)).size;
      } catch {
        throw new UserError(`${path}: missing, although ${COMPLETE_MARKER} lists it`);
      }
      if (size !== f.bytes || (await sha256File(path)) !== f.sha256) {
        throw new UserError(`${path}: size or checksum differs from ${COMPLETE_MARKER}; the file is corrupt`);
      }
    }
    const state = await this.readState(info);
    const readAll = async (file: string, prefixes: string[]) => {
      const st = await SafetensorsFile.open(join(info.dir, file));
      try {
        const maps = prefixes.map(() => new Map<string, Float32Array>());
        for (const s of this.specs) {
          for (const [k, prefix] of prefixes.entries()) {
            const name = prefix + s.name;
            if (!st.has(name)) {
              throw new UserError(
                `${st.path}: no tensor "${name}"; the checkpoint belongs to a different adapter configuration`,
              );
            }
            const info = st.info(name);
            if (info.dtype !== 'F32' || info.shape.join(',') !== s.shape.join(',')) {
              throw new UserError(
                `${st.path}: tensor "${name}" is ${info.dtype} [${info.shape}], expected F32 [${s.shape}]; ` +
                  'the checkpoint belongs to a different adapter configuration',
              );
            }
            // An F32 tensor read into a fresh buffer of its own: no copy needed.
            maps[k]!.set(s.name, await st.readFloat32(name));
          }
        }
        return maps;
      } finally {
        await st.close();
      }
    };
    const [params] = await readAll(ADAPTER_FILE, ['']);
    const [m, v] = await readAll(OPTIMIZER_FILE, ['exp_avg/', 'exp_avg_sq/']);
    const metricsText = await readFile(join(info.dir, METRICS_FILE), 'utf8');
    return { state, params: params!, m: m!, v: v!, metricsText };
  }
}
