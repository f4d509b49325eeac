/**
 * bench:lan — remote nodes on an emulated 1 Gbit/s LAN, against the same nodes on loopback and
 * against two local threads.
 *
 * Builds three hosts as network namespaces (gdb-coord, gdb-n1, gdb-n2), each with its own veth link
 * to a bridge in a fourth namespace (gdb-sw), so the coordinator's link carries both nodes' traffic.
 * Every veth end is shaped with tbf to 1 Gbit/s, so both directions of every link are (netem is not
 * available here: the links have a rate but no added latency). Addresses come from the RFC 2544
 * benchmarking range 198.18.0.0/15 (198.18.0.1-3/24). Nothing outside these namespaces is touched.
 *
 * Then it runs, one after the other, each with 1 warm-up step and --steps measured steps:
 *   lan       coordinator in gdb-coord (--nodes 2 --workers 0), a 1-thread node in gdb-n1 and gdb-n2
 *   loopback  the same coordinator and nodes, all on 127.0.0.1 in the root namespace
 *   threads   train --workers 2 (two local threads, no nodes)
 * and prints the lan run's steps and a table of medians. The busiest link's time is given twice:
 * for the bytes the nodes' messages hold, and for the bytes the coordinator's link really carried
 * during the measured steps (tbf's counters: TCP/IP and Ethernet headers included). Needs root,
 * ip and tc (iproute2).
 *
 * Usage: npm run bench:lan -- [--config gpt2-124m-verdict|tiny] [--steps 5] [--wire fp32|bf16]
 *                             [--data PATH] [--out DIR]
 * The runs go to --out DIR and stay there; without it, to a temporary directory removed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { MetricRecord, StepRecord } from '../src/coordinator/metrics.js';
import {
  BenchError, buildLan, commandExists, COORD, coordinatorLinkCounters, NAMESPACES, NODES, removeNamespaces, SHAPING, type Host, type LinkCounters,
} from './lan-net.js';
import { figures, printLanSteps, printSummary, summarize, type RunName, type StepFigures, type WireTraffic } from './lan-report.js';

/** The repository root (this file runs as dist/bench/lan.js) and the CLI it starts. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

// ---------------------------------------------------------------- options

type Wire = 'fp32' | 'bf16';

interface Options {
  config: string;
  steps: number;
  wire?: Wire;
  data?: string;
  out?: string;
}

class UsageError extends Error {}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', default: 'gpt2-124m-verdict' },
      steps: { type: 'string', default: '5' },
      wire: { type: 'string' },
      data: { type: 'string' },
      out: { type: 'string' },
    },
  });
  const steps = Number(values.steps);
  if (!Number.isInteger(steps) || steps < 1) throw new UsageError(`--steps must be a positive integer, got "${values.steps}"`);
  if (values.wire !== undefined && values.wire !== 'fp32' && values.wire !== 'bf16') {
    throw new UsageError(`--wire must be fp32 or bf16, got "${values.wire}"`);
  }
  return { config: values.config!, steps, wire: values.wire, data: values.data, out: values.out };
}

function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) throw new UsageError('must run as root (it creates network namespaces)');
  for (const cmd of ['ip', 'tc']) if (!commandExists(cmd)) throw new UsageError(`"${cmd}" (iproute2) is not installed or not on PATH`);
  if (!existsSync(MAIN)) throw new UsageError(`${MAIN} does not exist: run npm run build first`);
}

// ---------------------------------------------------------------- processes

interface Exit {
  code: number | null;
  signal: string | null;
  error?: string;
}

interface Proc {
  name: string;
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
const live = new Set<Proc>();

function collect(stream: Readable, tail: string[], onLine: (line: string) => void): void {
  createInterface({ input: stream }).on('line', (line) => {
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
    onLine(line);
  });
}

/** Starts the CLI with `args`, in namespace `ns` when given; echoes its output to stderr. */
function start(name: string, ns: string | null, args: string[]): Proc {
  const [cmd, argv]: [string, string[]] = ns ? ['ip', ['netns', 'exec', ns, process.execPath, MAIN, ...args]] : [process.execPath, [MAIN, ...args]];
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc: Proc = { name, child, stdout: [], stderr: [], exit: Promise.resolve({ code: null, signal: null }), killed: false, onLine: () => {} };
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

function stop(proc: Proc): void {
  if (!live.has(proc)) return;
  proc.killed = true;
  proc.child.kill('SIGKILL');
}

const succeeded = (e: Exit) => e.code === 0;
const describeExit = (e: Exit) => e.error ?? (e.signal ? `signal ${e.signal}` : `exit code ${e.code}`);

function failure(proc: Proc, e: Exit): string {
  const tail = (label: string, lines: string[]) => (lines.length ? `\n  ${label} tail:\n${lines.map((l) => `    ${l}`).join('\n')}` : '');
  return `${proc.name} failed (${describeExit(e)})${tail('stderr', proc.stderr)}${tail('stdout', proc.stdout)}`;
}

/** Waits for every process; the first to fail stops the others, and the failures are thrown. */
async function waitAll(procs: Proc[]): Promise<void> {
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
function listeningUrl(coordinator: Proc): Promise<string> {
  return new Promise((resolveUrl, reject) => {
    coordinator.onLine = (line) => {
      const m = LISTENING.exec(line);
      if (m) resolveUrl(m[1]!);
    };
    void coordinator.exit.then((e) => reject(new BenchError(failure(coordinator, e))));
  });
}

// ---------------------------------------------------------------- the three runs

function trainArgs(opts: Options, runDir: string): string[] {
  return [
    'train', '--config', opts.config, '--out', runDir, '--max-steps', String(opts.steps + 1),
    '--eval-freq', '1000000', '--eval-iter', '1', ...(opts.data ? ['--data', opts.data] : []),
  ];
}

/**
 * Reads the link's counters when the warm-up step's record reaches metrics.jsonl and when the last
 * measured one does (checked every 5 ms: a 124M step moves about 2 GB in 10 s).
 */
function watchLink(runDir: string, steps: number): () => WireTraffic | null {
  const file = join(runDir, 'metrics.jsonl');
  let first: LinkCounters | null = null;
  let last: LinkCounters | null = null;
  const timer = setInterval(() => {
    const done = existsSync(file) ? (readFileSync(file, 'utf8').match(/"type":"step"/g) ?? []).length : 0;
    if (done >= 1 && !first) first = coordinatorLinkCounters();
    if (done >= steps + 1 && first && !last) {
      last = coordinatorLinkCounters();
      clearInterval(timer);
    }
  }, 5);
  return () => {
    clearInterval(timer);
    if (!first || !last) return null;
    const [a, b]: LinkCounters[] = [first, last];
    return { toCoordinator: (b.toCoordinator - a.toCoordinator) / steps, fromCoordinator: (b.fromCoordinator - a.fromCoordinator) / steps };
  };
}

/** A coordinator listening on `coord.addr` with two 1-thread nodes, each in its host's namespace. */
async function runWithNodes(name: RunName, coord: Host | null, nodes: Array<Host | null>, opts: Options, runDir: string): Promise<void> {
  const listen = ['--listen', `${coord?.addr ?? '127.0.0.1'}:0`, '--nodes', String(nodes.length), '--workers', '0', ...(opts.wire ? ['--wire', opts.wire] : [])];
  const coordinator = start(`${name} coordinator`, coord?.ns ?? null, [...trainArgs(opts, runDir), ...listen]);
  const procs = [coordinator];
  try {
    const url = await listeningUrl(coordinator);
    const nodeArgs = ['worker', '--connect', url, '--token-file', join(runDir, 'token'), '--threads', '1'];
    nodes.forEach((host, i) => procs.push(start(`${name} worker ${host?.ns ?? i + 1}`, host?.ns ?? null, nodeArgs)));
    await waitAll(procs);
  } finally {
    procs.forEach(stop);
  }
}

async function runThreads(opts: Options, runDir: string): Promise<void> {
  const proc = start('threads', null, [...trainArgs(opts, runDir), '--workers', '2']);
  try {
    await waitAll([proc]);
  } finally {
    stop(proc);
  }
}

async function runConfiguration(name: RunName, opts: Options, dir: string): Promise<{ steps: StepRecord[]; wire: WireTraffic | null }> {
  const runDir = join(dir, name);
  process.stderr.write(`bench:lan: ${name}: ${opts.config}, ${opts.steps} measured steps after 1 warm-up, run directory ${runDir}\n`);
  const t0 = performance.now();
  let wire: WireTraffic | null = null;
  if (name === 'lan') {
    const stopWatch = watchLink(runDir, opts.steps);
    try {
      await runWithNodes(name, COORD, NODES, opts, runDir);
    } finally {
      wire = stopWatch();
    }
    if (!wire) throw new BenchError('the link counters were not read at the start and end of the measured steps');
  } else if (name === 'loopback') {
    await runWithNodes(name, null, [null, null], opts, runDir);
  } else {
    await runThreads(opts, runDir);
  }
  process.stderr.write(`bench:lan: ${name} took ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  return { steps: measuredSteps(runDir, opts.steps), wire };
}

/** The step records of a run's metrics.jsonl after the warm-up step. */
function measuredSteps(runDir: string, expected: number): StepRecord[] {
  const records = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as MetricRecord);
  const steps = records.filter((r): r is StepRecord => r.type === 'step').slice(1);
  if (steps.length !== expected) throw new BenchError(`${runDir}/metrics.jsonl holds ${steps.length} measured steps, expected ${expected}`);
  return steps;
}

// ---------------------------------------------------------------- main

function onSignal(signal: NodeJS.Signals): void {
  process.stderr.write(`bench:lan: ${signal}: stopping the runs and removing the namespaces\n`);
  live.forEach(stop);
  removeNamespaces();
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

async function bench(opts: Options): Promise<void> {
  const dir = opts.out ? resolve(opts.out) : mkdtempSync(join(tmpdir(), 'gpt-ddp-lan-'));
  mkdirSync(dir, { recursive: true });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const results = new Map<RunName, { steps: StepFigures[]; wire: WireTraffic | null }>();
  removeNamespaces();
  try {
    buildLan();
    process.stderr.write(`bench:lan: namespaces ${NAMESPACES.join(', ')}; every veth end shaped with tbf ${SHAPING.slice(2).join(' ')}\n`);
    for (const name of ['lan', 'loopback', 'threads'] as const) {
      const { steps, wire } = await runConfiguration(name, opts, dir);
      results.set(name, { steps: steps.map(figures), wire });
    }
  } finally {
    live.forEach(stop);
    removeNamespaces();
    // Each 124M run leaves about 2 GB of checkpoint: temporary runs go, --out keeps them.
    if (!opts.out) rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\n## bench:lan — ${opts.config}, wire ${opts.wire ?? 'fp32'}, 2 nodes x 1 thread vs 2 threads; runs ${opts.out ? `in ${dir}` : 'removed (--out DIR keeps them)'}`);
  printLanSteps(results.get('lan')!.steps);
  printSummary([...results].map(([name, r]) => summarize(name, r.steps, r.wire)), opts.steps);
}

async function main(): Promise<number> {
  try {
    const opts = parseOptions(process.argv.slice(2));
    checkPrerequisites();
    await bench(opts);
    return 0;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    console.error(`bench:lan: ${message}`);
    return err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1;
  }
}

process.exitCode = await main();
