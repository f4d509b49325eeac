/** bench:lan's figures: per step and per run, from the runs' step records and the link's counters. */
import type { StepRecord } from '../src/coordinator/metrics.js';
import { median } from '../src/math/stats.js';
import type { Floor } from './lan-floor.js';
import type { ThreadSplit } from './lan-procs.js';
import { LINK_BYTES_PER_SEC } from './lan-net.js';

export type RunName = 'lan' | 'loopback' | 'threads';

/** Bytes the coordinator's link carried per measured step, each way. */
export interface WireTraffic {
  toCoordinator: number;
  fromCoordinator: number;
}

interface NodeTraffic {
  member: number;
  sent: number;
  received: number;
}

export interface StepFigures {
  step: number;
  stepSec: number;
  /** The slowest member's compute time. */
  computeSec: number;
  nodes: NodeTraffic[];
  /** Time the coordinator's 1 Gbit/s full-duplex link needs for all nodes' bytes. */
  linkSec: number;
}

export function figures(r: StepRecord): StepFigures {
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

export interface Summary {
  name: RunName;
  stepSec: number;
  computeSec: number;
  linkSec: number;
  /** The busiest direction of the coordinator's link, from its counters (headers included). */
  wireLinkSec: number | null;
  /** Bytes on the wire per byte of the nodes' messages. */
  wireOverhead: number | null;
  /** Per node per step. */
  sentBytes: number;
  receivedBytes: number;
  /** CPU of all the run's processes per measured step (median). */
  cpuSec: number;
}

export function summarize(name: RunName, steps: StepFigures[], wire: WireTraffic | null, cpuSec: number): Summary {
  const perNode = steps.flatMap((s) => s.nodes);
  const med = (values: number[]) => (values.length ? median(values) : 0);
  const payload = steps.reduce((n, s) => n + s.nodes.reduce((m, x) => m + x.sent + x.received, 0), 0) / steps.length;
  return {
    name,
    stepSec: med(steps.map((s) => s.stepSec)),
    computeSec: med(steps.map((s) => s.computeSec)),
    linkSec: med(steps.map((s) => s.linkSec)),
    wireLinkSec: wire ? Math.max(wire.toCoordinator, wire.fromCoordinator) / LINK_BYTES_PER_SEC : null,
    wireOverhead: wire ? (wire.toCoordinator + wire.fromCoordinator) / payload : null,
    sentBytes: med(perNode.map((n) => n.sent)),
    receivedBytes: med(perNode.map((n) => n.received)),
    cpuSec,
  };
}

const sec = (x: number) => x.toFixed(3);
const bytes = (x: number) => Math.round(x).toLocaleString('en-US');
const mb = (x: number) => (x / 1e6).toFixed(2);
const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
/** A markdown rule: the first column left-aligned, the figures right-aligned. */
const rule = (n: number) => row(Array.from({ length: n }, (_, i) => (i === 0 ? '---' : '---:')));
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

export function printLanSteps(steps: StepFigures[]): void {
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

export function printSummary(rows: Summary[], steps: number): void {
  const threads = rows.find((r) => r.name === 'threads')!;
  const header = ['run', 'median step s', 'median slowest compute s', 'median busiest link s (1 Gbit/s)', 'step / max(compute, link)',
    'busiest link s, wire', 'step / max(compute, wire)', 'step / threads step', 'median sent MB per node per step', 'median received MB per node per step', 'CPU core-s per step'];
  console.log(`\n### medians of ${steps} steps after a warm-up step (MB = 1e6 bytes)\n`);
  console.log(row(header));
  console.log(rule(header.length));
  for (const r of rows) {
    const lan = r.name === 'lan';
    const ratio = (link: number | null) => (lan && link !== null ? (r.stepSec / Math.max(r.computeSec, link)).toFixed(2) : '-');
    console.log(row([
      r.name, sec(r.stepSec), sec(r.computeSec), lan ? sec(r.linkSec) : '-', ratio(r.linkSec), r.wireLinkSec !== null ? sec(r.wireLinkSec) : '-', ratio(r.wireLinkSec),
      (r.stepSec / threads.stepSec).toFixed(2), mb(r.sentBytes), mb(r.receivedBytes), sec(r.cpuSec),
    ]));
  }
  const lan = rows.find((r) => r.name === 'lan')!;
  const loopback = rows.find((r) => r.name === 'loopback')!;
  console.log('');
  console.log(`lan: median step ${sec(lan.stepSec)} s, median slowest compute ${sec(lan.computeSec)} s, median busiest-link time ${sec(lan.linkSec)} s; ` +
    `step / max(compute, link) = ${(lan.stepSec / Math.max(lan.computeSec, lan.linkSec)).toFixed(2)}`);
  console.log(`lan: the coordinator's link carried ${lan.wireOverhead!.toFixed(4)} bytes per byte of the nodes' messages (TCP/IP and Ethernet headers); ` +
    `its busier direction needed ${sec(lan.wireLinkSec!)} s per step: step / max(compute, that) = ${(lan.stepSec / Math.max(lan.computeSec, lan.wireLinkSec!)).toFixed(2)}`);
  console.log(`lan: median per node per step: sent ${bytes(lan.sentBytes)} B, received ${bytes(lan.receivedBytes)} B`);
  console.log(`loopback step / threads step = ${sec(loopback.stepSec)} / ${sec(threads.stepSec)} = ${(loopback.stepSec / threads.stepSec).toFixed(2)}`);
}

/** Issue 9's bound on the loopback step, as a multiple of the threads step. */
const TARGET = 1.3;

/**
 * What the transport alone costs on loopback, and the shortest loopback step it allows: the nodes
 * compute what the threads compute (the threads run's CPU), the bytes move on top (the floor), and
 * `cores` cores share it all.
 */
export function printFloor(rows: Summary[], floors: Floor[], cores: number): void {
  const threads = rows.find((r) => r.name === 'threads')!;
  const loopback = rows.find((r) => r.name === 'loopback')!;
  console.log(`\ncpu: threads ${sec(threads.cpuSec)} core-s per step (${pct(threads.cpuSec / (cores * threads.stepSec))} of ${cores} cores), ` +
    `loopback ${sec(loopback.cpuSec)} (${pct(loopback.cpuSec / (cores * loopback.stepSec))}): the nodes cost ${sec(loopback.cpuSec - threads.cpuSec)} core-s per step more`);
  const allowed = TARGET * cores * threads.stepSec;
  for (const f of floors) {
    const bound = (threads.cpuSec + f.cpuSec) / cores;
    console.log(`floor, ${f.pattern}: the same bytes over loopback WebSockets, nothing else running: ${sec(f.cpuSec)} core-s per step (${sec(f.stepSec)} s); ` +
      `loopback step >= (threads CPU + floor) / ${cores} cores = ${sec(bound)} s = ${(bound / threads.stepSec).toFixed(2)} x threads step; ` +
      `${TARGET}x leaves ${sec(allowed - threads.cpuSec - f.cpuSec)} core-s per step for all else (loopback used ${sec(loopback.cpuSec - threads.cpuSec - f.cpuSec)})`);
  }
}

/** A run's CPU per step by the role of its processes (the threads run has no nodes). */
export interface RoleSplit {
  coordinator: ThreadSplit;
  node: ThreadSplit;
}

/**
 * Where each run's CPU goes: the main threads move the bytes (sockets, frames, sums, checks), the
 * other threads compute (and run AdamW, and the runtime's GC and I/O helpers).
 */
export function printThreadSplits(runs: Array<{ name: RunName; split: RoleSplit | null }>): void {
  console.log('\ncpu by thread, core-s per measured step (mean from the first mark to the last; main threads move the bytes, the others compute):');
  for (const { name, split } of runs) {
    if (!split) continue;
    const nodes = split.node.main + split.node.other > 0 ? `; nodes: main threads ${sec(split.node.main)}, other threads ${sec(split.node.other)}` : '';
    console.log(`  ${name}: coordinator: main thread ${sec(split.coordinator.main)}, other threads ${sec(split.coordinator.other)}${nodes}`);
  }
}
