/**
 * An error caused by the user's input (arguments, config, files), as opposed to a bug.
 * Its message says what was wrong and how to fix it; the CLI prints it as one line, without a stack.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** True when `err` is a UserError (also across module copies, by name). */
export function isUserError(err: unknown): err is UserError {
  return err instanceof UserError || (err instanceof Error && err.name === 'UserError');
}

/** What each filesystem errno means for the user, and what to do about it. */
const FS_PROBLEMS: Record<string, string> = {
  ENOSPC: 'no space left on the device; free some space or choose another location',
  EDQUOT: 'the disk quota is exceeded; free some space or choose another location',
  EFBIG: 'the file is too large for this file system; choose another location',
  EACCES: 'permission denied; choose a location you can write to (or fix its permissions)',
  EPERM: 'operation not permitted; choose another location (or fix its permissions)',
  EROFS: 'the file system is read-only; choose a writable location',
  ENOTDIR: 'a file is where a directory is expected (the path or one above it); choose another path',
  EISDIR: 'it is a directory, where a file is expected; choose another path',
  EEXIST: 'it already exists; choose another path or remove it',
  ENOTEMPTY: 'the directory is not empty; choose another path or empty it',
  ENOENT: 'no such file or directory (or it cannot be created there); check the path',
  ENAMETOOLONG: 'the name is too long; choose a shorter path',
  ELOOP: 'too many symbolic links; check the path',
  EMFILE: 'too many open files; raise the limit (ulimit -n) or close other programs',
  ENFILE: 'too many open files on the system; close other programs',
  EBUSY: 'the file or device is busy; try again or choose another path',
  EXDEV: 'it is on another device than its destination; choose a path on the same file system',
  EIO: 'an input/output error (failing disk or network file system?); check the device',
  ETXTBSY: 'the file is in use by a running program; choose another path',
};

/** The operation a syscall name stands for, in words. */
const FS_OPERATIONS: Record<string, string> = {
  open: 'open',
  mkdir: 'create directory',
  write: 'write',
  read: 'read',
  rename: 'rename',
  unlink: 'remove',
  rmdir: 'remove directory',
  rm: 'remove',
  scandir: 'list directory',
  stat: 'access',
  lstat: 'access',
  copyfile: 'copy',
  link: 'link',
  fsync: 'flush',
  close: 'close',
  ftruncate: 'truncate',
};

/**
 * The UserError for a filesystem error (ENOSPC, EACCES, EROFS, ENOTDIR, …: an `errno` error from node:fs), naming
 * the path and the problem in one line; null when `err` is not one. Writers attach the path to errors that lack it
 * (`withFsPath`); the CLI boundary calls this, so every command reports such errors the same way.
 */
export function userErrorFromFs(err: unknown): UserError | null {
  if (!(err instanceof Error)) return null;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  const problem = e.code === undefined ? undefined : FS_PROBLEMS[e.code];
  if (problem === undefined) return null;
  const op = (e.syscall && FS_OPERATIONS[e.syscall]) ?? e.syscall ?? 'access';
  const target = e.path ? ` ${e.path}${e.dest ? ` to ${e.dest}` : ''}` : '';
  return new UserError(`cannot ${op}${target}: ${problem} (${e.code})`);
}

/** Adds `path` to a filesystem error that lacks one (writes through a file handle carry none); returns `err`. */
export function withFsPath<T>(err: T, path: string): T {
  const e = err as NodeJS.ErrnoException;
  if (err instanceof Error && typeof e.code === 'string' && e.path === undefined) e.path = path;
  return err;
}
