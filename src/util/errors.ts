/** A problem with the user's input (flag, config, data file, checkpoint): reported in one line, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
