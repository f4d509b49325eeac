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
 * during the measured steps (tbf's counters: TCP/IP and Ethernet headers included). Each run's CPU
 * per step is read from /proc. Last, the transport floor (lan-floor.ts): the CPU the loopback
 * run's bytes take on loopback WebSockets alone, and the shortest loopback step that leaves.
 * Needs root, ip and tc (iproute2).
 *
 * Usage: npm run bench:lan -- [--config gpt2-124m-verdict|tiny] [--steps 5] [--wire fp32|bf16]
 *                             [--data PATH] [--out DIR]
 * The runs go to --out DIR and stay there; without it, to a temporary directory removed at the end.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { StepRecord } from '../src/coordinator/metrics.js';
import { readRun } from '../src/report/runs.js';
import { median } from '../src/math/stats.js';
import {
  BenchError, buildLan, commandExists, COORD, coordinatorLinkCounters, NAMESPACES, NODES, removeNamespaces, SHAPING, type Host, type LinkCounters,
} from './lan-net.js';
import { measureFloor, type Floor } from './lan-floor.js';
import { markSteps } from './lan-marks.js';
import { cpuSeconds, listeningUrl, live, MAIN, start, stop, threadSplit, waitAll, type Proc, type ThreadSplit } from './lan-procs.js';
import { figures, printFloor, printLanSteps, printSummary, printThreadSplits, summarize, type RoleSplit, type RunName, type StepFigures, type WireTraffic } from './lan-report.js';

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

// ---------------------------------------------------------------- the three runs

function trainArgs(opts: Options, runDir: string): string[] {
  return [
    'train', '--config', opts.config, '--out', runDir, '--max-steps', String(opts.steps + 1),
    '--eval-freq', '1000000', '--eval-iter', '1', '--checkpoint-every', '1000000', ...(opts.data ? ['--data', opts.data] : []),
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

interface RunResult {
  steps: StepRecord[];
  wire: WireTraffic | null;
  /** CPU (user + system, all threads) of the run's processes per measured step (median). */
  cpuSec: number;
  /** The same by role and thread, per measured step (mean: from the first mark to the last). */
  split: RoleSplit | null;
}

/** What each mark reads: the CPU the run's processes have used, and on the LAN its link's counters. */
interface Mark {
  cpuSec: number;
  split: RoleSplit;
  link: LinkCounters | null;
}

const pidsOf = (procs: Proc[]) => procs.map((p) => p.child.pid!);
const roleSplit = (procs: Proc[]): RoleSplit => ({
  coordinator: threadSplit(pidsOf(procs.filter((p) => p.role === 'coordinator'))),
  node: threadSplit(pidsOf(procs.filter((p) => p.role === 'node'))),
});

async function runConfiguration(name: RunName, opts: Options, dir: string): Promise<RunResult> {
  const runDir = join(dir, name);
  process.stderr.write(`bench:lan: ${name}: ${opts.config}, ${opts.steps} measured steps after 1 warm-up, run directory ${runDir}\n`);
  const t0 = performance.now();
  // Runs go one at a time, so the live processes are this run's.
  const marking = markSteps(runDir, opts.steps, (): Mark => ({
    cpuSec: cpuSeconds(pidsOf([...live])),
    split: roleSplit([...live]),
    link: name === 'lan' ? coordinatorLinkCounters() : null,
  }));
  let marks: Mark[] | string;
  try {
    if (name === 'threads') await runThreads(opts, runDir);
    else await runWithNodes(name, name === 'lan' ? COORD : null, name === 'lan' ? NODES : [null, null], opts, runDir);
  } finally {
    marks = marking();
  }
  process.stderr.write(`bench:lan: ${name} took ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  // Without marks the step records still stand; the CPU and link figures print as NaN.
  if (typeof marks === 'string') process.stderr.write(`bench:lan: ${name}: no CPU or link figures: ${marks}\n`);
  const m = typeof marks === 'string' ? null : marks;
  const perStep = (f: (mark: Mark) => number) => (m ? median(m.slice(1).map((mark, i) => f(mark) - f(m[i]!))) : NaN);
  return {
    steps: measuredSteps(runDir, opts.steps),
    wire: name === 'lan' ? { toCoordinator: perStep((x) => x.link!.toCoordinator), fromCoordinator: perStep((x) => x.link!.fromCoordinator) } : null,
    cpuSec: perStep((x) => x.cpuSec),
    split: m ? meanSplit(m[0]!.split, m.at(-1)!.split, m.length - 1) : null,
  };
}

function meanSplit(first: RoleSplit, last: RoleSplit, steps: number): RoleSplit {
  const per = (a: ThreadSplit, b: ThreadSplit) => ({ main: (b.main - a.main) / steps, other: (b.other - a.other) / steps });
  return { coordinator: per(first.coordinator, last.coordinator), node: per(first.node, last.node) };
}

/** The step records of a run's metrics.jsonl after the warm-up step. */
function measuredSteps(runDir: string, expected: number): StepRecord[] {
  const steps = readRun(runDir).steps.slice(1);
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
  const results = new Map<RunName, { steps: StepFigures[]; wire: WireTraffic | null; cpuSec: number; split: RoleSplit | null }>();
  const floors: Floor[] = [];
  removeNamespaces();
  try {
    buildLan();
    process.stderr.write(`bench:lan: namespaces ${NAMESPACES.join(', ')}; every veth end shaped with tbf ${SHAPING.slice(2).join(' ')}\n`);
    for (const name of ['lan', 'loopback', 'threads'] as const) {
      const { steps, wire, cpuSec, split } = await runConfiguration(name, opts, dir);
      results.set(name, { steps: steps.map(figures), wire, cpuSec, split });
    }
    const nodeBytes = median(results.get('loopback')!.steps.flatMap((s) => s.nodes.map((n) => Math.max(n.sent, n.received))));
    for (const pattern of ['star', 'ring'] as const) {
      process.stderr.write(`bench:lan: transport floor, ${pattern}: ${(nodeBytes / 1e6).toFixed(2)} MB per node per step, ${opts.steps} steps after a warm-up\n`);
      floors.push(await measureFloor(pattern, nodeBytes, opts.steps));
    }
  } finally {
    live.forEach(stop);
    removeNamespaces();
    // Each 124M run leaves about 2 GB of checkpoint: temporary runs go, --out keeps them.
    if (!opts.out) rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\n## bench:lan — ${opts.config}, wire ${opts.wire ?? 'fp32'}, 2 nodes x 1 thread vs 2 threads; runs ${opts.out ? `in ${dir}` : 'removed (--out DIR keeps them)'}`);
  printLanSteps(results.get('lan')!.steps);
  const summaries = [...results].map(([name, r]) => summarize(name, r.steps, r.wire, r.cpuSec));
  printSummary(summaries, opts.steps);
  printFloor(summaries, floors, availableParallelism());
  printThreadSplits([...results].map(([name, r]) => ({ name, split: r.split })));
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
