import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UsageError } from './errors.js';

/** The lock's name in a run directory (out-dir checks do not count it as a foreign file). */
export const LOCK_NAME = '.lock';

interface LockOwner {
  pid: number;
  host: string;
  since: string;
}

export interface RunLock {
  release(): void;
}

/** Test hook: whether a process on this host is a gpt-ddp run (see isOurProcess). */
type ProcessProbe = (pid: number) => boolean;

/**
 * Whether `pid` is alive and, where /proc tells, runs our CLI: a lock left by a killed run is
 * stale even when its pid has since gone to another program.
 */
function isOurProcess(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /main\.js|gpt-ddp/.test(cmdline);
  } catch {
    return true;
  }
}

function readOwner(path: string): LockOwner | null {
  try {
    const owner = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockOwner>;
    return typeof owner.pid === 'number' && typeof owner.host === 'string' && typeof owner.since === 'string' ? (owner as LockOwner) : null;
  } catch {
    return null;
  }
}

/**
 * Takes `dir/.lock` for this process, so two commands never write one run at once (a second
 * `train --resume` would interleave checkpoints and metrics). A lock whose process is gone (killed,
 * crashed) is taken over; one held on this host is refused with its pid; one from another host
 * (a shared file system) cannot be checked and is refused with how to clear it.
 */
export function lockRunDir(dir: string, probe: ProcessProbe = isOurProcess): RunLock {
  const path = join(dir, LOCK_NAME);
  const me: LockOwner = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new UsageError(`cannot lock ${dir} (${(err as Error).message})`);
      const owner = readOwner(path);
      if (owner && owner.host !== me.host) {
        throw new UsageError(`${dir} is in use by gpt-ddp process ${owner.pid} on ${owner.host} since ${owner.since}; if no run is going there, delete ${path}`);
      }
      if (owner && owner.pid !== me.pid && probe(owner.pid)) {
        throw new UsageError(`${dir} is in use by gpt-ddp process ${owner.pid} since ${owner.since}: wait for it to finish, or stop it (Ctrl-C saves a checkpoint)`);
      }
      // Stale: take it over, once (a second stale lock means another command is doing the same).
      if (attempt > 0) throw new UsageError(`cannot lock ${dir}: another command is taking it over; try again`);
      try {
        unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot remove the stale lock ${path} (${(e as Error).message})`);
      }
      continue;
    }
    try {
      writeSync(fd, `${JSON.stringify(me)}\n`);
    } finally {
      closeSync(fd);
    }
    return {
      release: () => {
        if (readOwner(path)?.pid !== me.pid) return;
        try {
          unlinkSync(path);
        } catch {
          // Already gone: nothing to release (this runs in finally blocks, which must not throw).
        }
      },
    };
  }
}
