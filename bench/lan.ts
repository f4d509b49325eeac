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
 * and prints the lan run's steps and a table of medians. Needs root, ip and tc (iproute2).
 *
 * Usage: npm run bench:lan -- [--config gpt2-124m-verdict|tiny] [--steps 5] [--wire fp32|bf16]
 *                             [--data PATH] [--out DIR]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { MetricRecord, StepRecord } from '../src/coordinator/metrics.js';
import { median } from '../src/math/stats.js';

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
/** A run failed: the message says which process and shows its output. */
class BenchError extends Error {}

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

function commandExists(cmd: string): boolean {
  try {
    execFileSync(cmd, ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) throw new UsageError('must run as root (it creates network namespaces)');
  for (const cmd of ['ip', 'tc']) if (!commandExists(cmd)) throw new UsageError(`"${cmd}" (iproute2) is not installed or not on PATH`);
  if (!existsSync(MAIN)) throw new UsageError(`${MAIN} does not exist: run npm run build first`);
}

// ---------------------------------------------------------------- the emulated LAN

interface Host {
  ns: string;
  addr: string;
}

const SWITCH = 'gdb-sw';
const BRIDGE = 'gdb-br';
const COORD: Host = { ns: 'gdb-coord', addr: '198.18.0.1' };
const NODES: Host[] = [{ ns: 'gdb-n1', addr: '198.18.0.2' }, { ns: 'gdb-n2', addr: '198.18.0.3' }];
const HOSTS = [COORD, ...NODES];
/** Every namespace this benchmark makes, and the only ones it ever deletes. */
const NAMESPACES = [SWITCH, ...HOSTS.map((h) => h.ns)];
const SHAPING = ['root', 'tbf', 'rate', '1gbit', 'burst', '1mb', 'latency', '10ms'];
/** 1 Gbit/s in bytes per second. */
const LINK_BYTES_PER_SEC = 125e6;

/** Runs a command to completion; on failure, throws with the command line and its stderr. */
function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new BenchError(`${cmd} ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''}`);
  }
}

function ourNamespaces(): string[] {
  const listed = run('ip', ['netns', 'list']).split('\n').map((line) => line.split(' ')[0]!);
  return NAMESPACES.filter((ns) => listed.includes(ns));
}

/** Deletes our namespaces (their veths and bridge go with them); never throws. */
function removeNamespaces(): void {
  for (const ns of ourNamespaces()) {
    try {
      run('ip', ['netns', 'delete', ns]);
    } catch (err) {
      process.stderr.write(`bench:lan: could not delete namespace ${ns}: ${(err as Error).message}\n`);
    }
  }
}

function shape(ns: string, dev: string): void {
  run('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, ...SHAPING]);
}

/** One host's link: a veth pair created inside the namespaces, the switch end on the bridge. */
function connect(host: Host): void {
  const hostEnd = `${host.ns}-h`;
  const switchEnd = `${host.ns}-s`;
  run('ip', ['-n', SWITCH, 'link', 'add', switchEnd, 'type', 'veth', 'peer', 'name', hostEnd, 'netns', host.ns]);
  run('ip', ['-n', SWITCH, 'link', 'set', switchEnd, 'master', BRIDGE, 'up']);
  run('ip', ['-n', host.ns, 'addr', 'add', `${host.addr}/24`, 'dev', hostEnd]);
  run('ip', ['-n', host.ns, 'link', 'set', hostEnd, 'up']);
  shape(SWITCH, switchEnd);
  shape(host.ns, hostEnd);
}

function buildLan(): void {
  for (const ns of NAMESPACES) {
    run('ip', ['netns', 'add', ns]);
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  run('ip', ['-n', SWITCH, 'link', 'add', BRIDGE, 'type', 'bridge']);
  run('ip', ['-n', SWITCH, 'link', 'set', BRIDGE, 'up']);
  for (const host of HOSTS) connect(host);
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

type RunName = 'lan' | 'loopback' | 'threads';

function trainArgs(opts: Options, runDir: string): string[] {
  return [
    'train', '--config', opts.config, '--out', runDir, '--max-steps', String(opts.steps + 1),
    '--eval-freq', '1000000', '--eval-iter', '1', ...(opts.data ? ['--data', opts.data] : []),
  ];
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

async function runConfiguration(name: RunName, opts: Options, dir: string): Promise<StepRecord[]> {
  const runDir = join(dir, name);
  process.stderr.write(`bench:lan: ${name}: ${opts.config}, ${opts.steps} measured steps after 1 warm-up, run directory ${runDir}\n`);
  const t0 = performance.now();
  if (name === 'lan') await runWithNodes(name, COORD, NODES, opts, runDir);
  else if (name === 'loopback') await runWithNodes(name, null, [null, null], opts, runDir);
  else await runThreads(opts, runDir);
  process.stderr.write(`bench:lan: ${name} took ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  return measuredSteps(runDir, opts.steps);
}

/** The step records of a run's metrics.jsonl after the warm-up step. */
function measuredSteps(runDir: string, expected: number): StepRecord[] {
  const records = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as MetricRecord);
  const steps = records.filter((r): r is StepRecord => r.type === 'step').slice(1);
  if (steps.length !== expected) throw new BenchError(`${runDir}/metrics.jsonl holds ${steps.length} measured steps, expected ${expected}`);
  return steps;
}

// ---------------------------------------------------------------- figures

interface NodeTraffic {
  member: number;
  sent: number;
  received: number;
}

interface StepFigures {
  step: number;
  stepSec: number;
  /** The slowest member's compute time. */
  computeSec: number;
  nodes: NodeTraffic[];
  /** Time the coordinator's 1 Gbit/s full-duplex link needs for all nodes' bytes. */
  linkSec: number;
}

function figures(r: StepRecord): StepFigures {
  const nodes = r.members.filter((m) => m.member !== 0).map((m) => ({ member: m.member, sent: m.sentBytes, received: m.receivedBytes }));
  const sum = (f: (n: NodeTraffic) => number) => nodes.reduce((s, n) => s + f(n), 0);
  return {
    step: r.step,
    stepSec: r.stepSec,
    computeSec: r.members.length ? Math.max(...r.members.map((m) => m.computeSec)) : r.computeSec,
    nodes,
    linkSec: Math.max(sum((n) => n.sent), sum((n) => n.received)) / LINK_BYTES_PER_SEC,
  };
}

interface Summary {
  name: RunName;
  stepSec: number;
  computeSec: number;
  linkSec: number;
  /** Per node per step. */
  sentBytes: number;
  receivedBytes: number;
}

function summarize(name: RunName, steps: StepFigures[]): Summary {
  const perNode = steps.flatMap((s) => s.nodes);
  const med = (values: number[]) => (values.length ? median(values) : 0);
  return {
    name,
    stepSec: med(steps.map((s) => s.stepSec)),
    computeSec: med(steps.map((s) => s.computeSec)),
    linkSec: med(steps.map((s) => s.linkSec)),
    sentBytes: med(perNode.map((n) => n.sent)),
    receivedBytes: med(perNode.map((n) => n.received)),
  };
}

const sec = (x: number) => x.toFixed(3);
const bytes = (x: number) => Math.round(x).toLocaleString('en-US');
const mb = (x: number) => (x / 1e6).toFixed(2);
const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
/** A markdown rule: the first column left-aligned, the figures right-aligned. */
const rule = (n: number) => row(Array.from({ length: n }, (_, i) => (i === 0 ? '---' : '---:')));

function printLanSteps(steps: StepFigures[]): void {
  const members = [...new Set(steps.flatMap((s) => s.nodes.map((n) => n.member)))].sort((a, b) => a - b);
  const header = ['step', 'slowest compute s', ...members.flatMap((m) => [`member ${m} sent B`, `member ${m} received B`]), 'busiest link s', 'step s'];
  console.log('\n### lan run, per measured step\n');
  console.log(row(header));
  console.log(rule(header.length));
  for (const s of steps) {
    const traffic = members.flatMap((m) => {
      const n = s.nodes.find((x) => x.member === m);
      return n ? [bytes(n.sent), bytes(n.received)] : ['-', '-'];
    });
    console.log(row([String(s.step), sec(s.computeSec), ...traffic, sec(s.linkSec), sec(s.stepSec)]));
  }
}

function printSummary(rows: Summary[], opts: Options): void {
  const threads = rows.find((r) => r.name === 'threads')!;
  const header = ['run', 'median step s', 'median slowest compute s', 'median busiest link s (1 Gbit/s)', 'step / max(compute, link)',
    'step / threads step', 'median sent MB per node per step', 'median received MB per node per step'];
  console.log(`\n### medians of ${opts.steps} steps after a warm-up step (MB = 1e6 bytes)\n`);
  console.log(row(header));
  console.log(rule(header.length));
  for (const r of rows) {
    const lan = r.name === 'lan';
    console.log(row([
      r.name, sec(r.stepSec), sec(r.computeSec), lan ? sec(r.linkSec) : '-', lan ? (r.stepSec / Math.max(r.computeSec, r.linkSec)).toFixed(2) : '-',
      (r.stepSec / threads.stepSec).toFixed(2), mb(r.sentBytes), mb(r.receivedBytes),
    ]));
  }
  const lan = rows.find((r) => r.name === 'lan')!;
  const loopback = rows.find((r) => r.name === 'loopback')!;
  console.log('');
  console.log(`lan: median step ${sec(lan.stepSec)} s, median slowest compute ${sec(lan.computeSec)} s, median busiest-link time ${sec(lan.linkSec)} s; ` +
    `step / max(compute, link) = ${(lan.stepSec / Math.max(lan.computeSec, lan.linkSec)).toFixed(2)}`);
  console.log(`lan: median per node per step: sent ${bytes(lan.sentBytes)} B, received ${bytes(lan.receivedBytes)} B`);
  console.log(`loopback step / threads step = ${sec(loopback.stepSec)} / ${sec(threads.stepSec)} = ${(loopback.stepSec / threads.stepSec).toFixed(2)}`);
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
  const results = new Map<RunName, StepFigures[]>();
  removeNamespaces();
  try {
    buildLan();
    process.stderr.write(`bench:lan: namespaces ${NAMESPACES.join(', ')}; every veth end shaped with tbf ${SHAPING.slice(2).join(' ')}\n`);
    for (const name of ['lan', 'loopback', 'threads'] as const) results.set(name, (await runConfiguration(name, opts, dir)).map(figures));
  } finally {
    live.forEach(stop);
    removeNamespaces();
  }
  console.log(`\n## bench:lan — ${opts.config}, wire ${opts.wire ?? 'fp32'}, 2 nodes x 1 thread vs 2 threads; runs in ${dir}`);
  printLanSteps(results.get('lan')!);
  printSummary([...results].map(([name, steps]) => summarize(name, steps)), opts);
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
