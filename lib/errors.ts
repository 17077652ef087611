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
