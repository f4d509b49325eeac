/** A problem with the user's input (flag, config, data file, checkpoint): reported in one line, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The user stopped the run (Ctrl-C) while it waited: exit code 130, like a stop between steps. */
export class Interrupted extends Error {
  override readonly name = 'Interrupted';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
