/** bench:lan's processes: the CLI started in a namespace or not, their output, exits and CPU time. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { BenchError } from './lan-net.js';

/** The repository root (this file runs as dist/bench/lan-procs.js) and the CLI it starts. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

interface Exit {
  code: number | null;
  signal: string | null;
  error?: string;
}

export interface Proc {
  name: string;
  /** A node runs `gpt-ddp worker`; everything else is a coordinator (with or without local threads). */
  role: 'coordinator' | 'node';
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  exit: Promise<Exit>;
  /** Set when this benchmark killed it (so its exit is not the cause of a failure). */
  killed: boolean;
  onLine: (line: string) => void;
}

const TAIL_LINES = 20;
/** Every child still running, so a signal or an error can stop them. */
export const live = new Set<Proc>();

function collect(stream: Readable, tail: string[], onLine: (line: string) => void): void {
  createInterface({ input: stream }).on('line', (line) => {
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
    onLine(line);
  });
}

/** Starts the CLI with `args`, in namespace `ns` when given; echoes its output to stderr. */
export function start(name: string, ns: string | null, args: string[]): Proc {
  const [cmd, argv]: [string, string[]] = ns ? ['ip', ['netns', 'exec', ns, process.execPath, MAIN, ...args]] : [process.execPath, [MAIN, ...args]];
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc: Proc = { name, role: args[0] === 'worker' ? 'node' : 'coordinator', child, stdout: [], stderr: [], exit: Promise.resolve({ code: null, signal: null }), killed: false, onLine: () => {} };
  proc.exit = new Promise((done) => {
    child.on('error', (err) => done({ code: null, signal: null, error: err.message }));
    child.on('close', (code, signal) => done({ code, signal }));
  });
  void proc.exit.then(() => live.delete(proc));
  live.add(proc);
  const echo = (line: string) => {
    process.stderr.write(`  [${name}] ${line}\n`);
    proc.onLine(line);
  };
  collect(child.stdout!, proc.stdout, echo);
  collect(child.stderr!, proc.stderr, echo);
  return proc;
}

export function stop(proc: Proc): void {
  if (!live.has(proc)) return;
  proc.killed = true;
  proc.child.kill('SIGKILL');
}

let clockTicks = 0;
/** Clock ticks per second in /proc/PID/stat: asked once, when first needed, so a failing getconf is a bench error, not an import crash. */
const clockTicksPerSec = () => (clockTicks ||= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })));

/** User + system clock ticks in a /proc stat file (of a process: all its threads, exited ones included). */
function statTicks(path: string): number {
  const stat = readFileSync(path, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** CPU seconds (user + system, all threads) the processes have used so far. */
export function cpuSeconds(pids: number[]): number {
  return pids.reduce((ticks, pid) => ticks + statTicks(`/proc/${pid}/stat`), 0) / clockTicksPerSec();
}

/** CPU seconds so far of processes' main threads, and of all their other live threads together. */
export interface ThreadSplit {
  main: number;
  other: number;
}

/**
 * The main thread (its id is the process id) moves a run's bytes: sockets, frames, sums and checks;
 * the other threads are the compute threads and the runtime's helpers (GC, libuv). A thread that has
 * exited is not counted (the runs keep theirs to the end).
 */
export function threadSplit(pids: number[]): ThreadSplit {
  const split = { main: 0, other: 0 };
  for (const pid of pids) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      let ticks: number;
      try {
        ticks = statTicks(`/proc/${pid}/task/${tid}/stat`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // it exited since the listing
        throw err;
      }
      if (Number(tid) === pid) split.main += ticks;
      else split.other += ticks;
    }
  }
  return { main: split.main / clockTicksPerSec(), other: split.other / clockTicksPerSec() };
}

const succeeded = (e: Exit) => e.code === 0;
const describeExit = (e: Exit) => e.error ?? (e.signal ? `signal ${e.signal}` : `exit code ${e.code}`);

function failure(proc: Proc, e: Exit): string {
  const tail = (label: string, lines: string[]) => (lines.length ? `\n  ${label} tail:\n${lines.map((l) => `    ${l}`).join('\n')}` : '');
  return `${proc.name} failed (${describeExit(e)})${tail('stderr', proc.stderr)}${tail('stdout', proc.stdout)}`;
}

/** Waits for every process; the first to fail stops the others, and the failures are thrown. */
export async function waitAll(procs: Proc[]): Promise<void> {
  const failures: string[] = [];
  await Promise.all(procs.map(async (p) => {
    const e = await p.exit;
    if (succeeded(e) || p.killed) return;
    failures.push(failure(p, e));
    procs.forEach(stop);
  }));
  if (failures.length) throw new BenchError(failures.join('\n'));
}

const LISTENING = /listening on (wss?:\/\/[0-9.]+:\d+)/;

/** The URL the coordinator prints once nodes can join; throws if it exits first. */
export function listeningUrl(coordinator: Proc): Promise<string> {
  return new Promise((resolveUrl, reject) => {
    coordinator.onLine = (line) => {
      const m = LISTENING.exec(line);
      if (m) resolveUrl(m[1]!);
    };
    void coordinator.exit.then((e) => reject(new BenchError(failure(coordinator, e))));
  });
}
