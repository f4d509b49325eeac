import { existsSync, mkdirSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { errorMessage, UsageError } from '../util/errors.js';
import { LOCK_NAME } from '../util/run-lock.js';

/** How a command may use an output directory that already exists. */
export interface OutDirPolicy {
  /** The flag naming the directory, for messages. */
  flag: string;
  /** What the command leaves there ("run", "comparison"), for messages. */
  kind: string;
  /** The directory already holds the command's own outputs, which it may replace. */
  own: boolean;
  /** Names the command writes at the top of the directory: never written over a file it did not write. */
  outputs: readonly string[];
  /** Accept a non-empty directory that is not the command's own, keeping its files; undefined: always accepted. */
  force?: boolean;
}

const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? errorMessage(err);

/** The deepest existing path at or above `dir`, and the missing ones below it, outermost first. */
function existingAndMissing(dir: string): { existing: string; missing: string[] } {
  const missing: string[] = [];
  let path = resolve(dir);
  for (; !existsSync(path); path = dirname(path)) missing.unshift(path);
  return { existing: path, missing };
}

function entriesOf(dir: string, flag: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    throw new UsageError(`cannot read ${flag} ${dir} (${code(err)})`);
  }
}

/**
 * Creates the missing directories one by one (a recursive mkdir can loop forever where mkdir
 * fails with ENOENT, as in /proc), writes and removes a file; on failure removes what it created.
 */
function proveWritable(dir: string, missing: string[], flag: string): void {
  let created: string | undefined;
  try {
    for (const path of missing) {
      mkdirSync(path);
      created ??= path;
    }
    const probe = join(dir, `.gpt-ddp-probe-${process.pid}`);
    writeFileSync(probe, '');
    unlinkSync(probe);
  } catch (err) {
    if (created) rmSync(created, { recursive: true, force: true });
    throw new UsageError(`${flag} ${dir} is not writable (${code(err)})`);
  }
}

/**
 * Checks an output directory before any work starts, then creates it and proves it writable:
 * refuses a path that is or lies under a file, a non-empty directory that is not the command's
 * own (unless forced), and a foreign file with the name of an output, so no user file is overwritten.
 */
export function prepareOutputDir(dir: string, policy: OutDirPolicy): void {
  const { flag } = policy;
  const { existing, missing } = existingAndMissing(dir);
  if (!statSync(existing).isDirectory()) {
    throw new UsageError(missing.length === 0 ? `${flag} ${dir} is a file, not a directory` : `${flag} ${dir} lies under ${existing}, which is a file`);
  }
  if (!policy.own && existsSync(dir)) {
    const entries = entriesOf(dir, flag).filter((name) => name !== LOCK_NAME);
    if (entries.length > 0 && policy.force === false) {
      throw new UsageError(`${flag} ${dir} is not empty and holds no gpt-ddp ${policy.kind}; pass --force to write beside its files, or choose another ${flag}`);
    }
    const clash = policy.outputs.find((name) => entries.includes(name));
    if (clash) throw new UsageError(`${flag} ${dir} already has a ${clash} that gpt-ddp did not write; choose another ${flag}`);
  }
  proveWritable(dir, missing, flag);
}
