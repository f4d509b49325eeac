import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { errorMessage, UsageError } from './errors.js';

/** Writes the chunks to `path` and flushes them to the disk. */
export function writeFileDurable(path: string, chunks: Buffer[]): void {
  const fd = openSync(path, 'w');
  try {
    for (const chunk of chunks) {
      let done = 0;
      while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Flushes a file's data, or a directory's entries (a rename or a new file in it), to the disk. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes atomically: a temporary file next to the target, fsync, rename, fsync of the directory. */
export function writeFileAtomic(path: string, chunks: Buffer[]): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileDurable(tmp, chunks);
  renameSync(tmp, path);
  fsyncPath(dirname(path));
}

/** Whether `path` exists and is a directory. */
export function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The bytes of the file a flag names, or one usage error saying what is wrong with it. */
export function readFlagFile(flag: string, path: string): Buffer {
  try {
    if (!statSync(path).isFile()) throw new UsageError(`--${flag} ${path} is not a file`);
    return readFileSync(path);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(code === 'ENOENT' ? `--${flag} ${path} does not exist` : `--${flag} ${path} cannot be read: ${errorMessage(err)}`);
  }
}
