/**
 * bench:lan's transport floor: the CPU one step's bytes take to cross loopback WebSockets between
 * three processes (a coordinator and two nodes) that do nothing else: no compute, no sums, no
 * checks, no copies of their own (ws still gathers each message out of the socket's reads). Two
 * patterns move a node's gradient of B bytes:
 *   star  what gpt-ddp does: each node sends the coordinator B and gets B back (4B in all);
 *   ring  the least an exact fp32 design moves when the coordinator and both nodes each need a
 *         gradient's worth: the nodes swap halves twice (reduce-scatter, then all-gather of the
 *         summed or updated halves: B each way) and each sends the coordinator the half it summed
 *         (B/2 each; 3B in all).
 * The nodes of a loopback run compute what two local threads compute, and the bytes move on top,
 * so a loopback step can be no shorter than (the threads run's CPU per step + the floor) / cores.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { HEADER_BYTES, maxPayload, PIECE_FLOATS } from '../src/comm/frames.js';
import { median } from '../src/math/stats.js';

export type Pattern = 'star' | 'ring';

/** Bytes per step from process `from` to process `to` (`[from][to]`); process 0 is the coordinator. */
export function patternBytes(pattern: Pattern, nodeBytes: number): number[][] {
  const b = nodeBytes;
  const half = Math.ceil(b / 2);
  return pattern === 'star' ? [[0, b, b], [b, 0, 0], [b, 0, 0]] : [[0, 0, 0], [half, 0, b], [half, b, 0]];
}

/** The frames gpt-ddp streams: a piece of floats and its header. */
const PIECE_BYTES = HEADER_BYTES + 4 * PIECE_FLOATS;
const WS_OPTIONS = { perMessageDeflate: false, maxPayload: maxPayload(PIECE_FLOATS) } as const;

type ToPeer = { kind: 'connect'; index: number; ports: number[]; bytes: number[][] } | { kind: 'go' };
type FromPeer = { kind: 'port'; port: number } | { kind: 'ready' } | { kind: 'done'; cpuSec: number };

const cpuSec = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/**
 * One process of the pattern: a server for lower-numbered partners, a client of higher-numbered
 * ones. It exits when the bench goes away or a connection breaks: its server would keep it alive,
 * and the bench sees the exit.
 */
function runPeer(): void {
  const say = (m: FromPeer) => process.send!(m);
  const lost = (why: string) => {
    process.stderr.write(`bench:lan floor process: ${why}\n`);
    process.exit(1);
  };
  process.on('disconnect', () => lost('the bench went away'));
  const links = new Map<number, WebSocket>();
  const piece = Buffer.alloc(PIECE_BYTES, 1);
  let plan: { index: number; toPartner: number[]; partners: number[] } | null = null;
  let expected = 0;
  let received = 0;
  let sending = 0;
  /** This step's "go" came: bytes from faster partners may arrive before it. */
  let going = false;
  const maybeDone = () => {
    if (going && received === expected && sending === 0) {
      going = false;
      received = 0;
      say({ kind: 'done', cpuSec: cpuSec() });
    }
  };
  const maybeReady = () => {
    if (plan && links.size === plan.partners.length) say({ kind: 'ready' });
  };
  const link = (j: number, ws: WebSocket) => {
    links.set(j, ws);
    // With the default binaryType, 'nodebuffer', ws hands over each message as one Buffer.
    ws.on('message', (data: RawData) => {
      received += (data as Buffer).length;
      maybeDone();
    });
    maybeReady();
  };
  const watch = (ws: WebSocket) => ws.on('close', (code) => lost(`a link closed (code ${code})`)).on('error', (err) => lost(`a link failed: ${err.message}`));
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, ...WS_OPTIONS });
  server.on('listening', () => say({ kind: 'port', port: (server.address() as { port: number }).port }));
  server.on('connection', (ws) => watch(ws).once('message', (id) => link(Number(id.toString()), ws)));
  process.on('message', (m: ToPeer) => {
    if (m.kind === 'connect') {
      const toPartner = m.bytes[m.index]!;
      const partners = toPartner.map((_, j) => j).filter((j) => j !== m.index && (toPartner[j]! > 0 || m.bytes[j]![m.index]! > 0));
      plan = { index: m.index, toPartner, partners };
      expected = m.bytes.reduce((n, row) => n + row[m.index]!, 0);
      for (const j of partners.filter((j) => j > m.index)) {
        const ws = watch(new WebSocket(`ws://127.0.0.1:${m.ports[j]}`, { ...WS_OPTIONS, generateMask: (mask) => mask.fill(0) }));
        ws.on('open', () => {
          ws.send(String(m.index));
          link(j, ws);
        });
      }
      maybeReady();
    } else {
      going = true;
      for (const [j, ws] of links) {
        for (let left = plan!.toPartner[j]!; left > 0; left -= PIECE_BYTES) {
          sending += 1;
          ws.send(piece.subarray(0, Math.min(left, PIECE_BYTES)), () => {
            sending -= 1;
            maybeDone();
          });
        }
      }
      maybeDone();
    }
  });
}

/** Waits for one message of `kind` from each child. */
function fromEach<K extends FromPeer['kind']>(children: ChildProcess[], kind: K): Promise<Array<Extract<FromPeer, { kind: K }>>> {
  return Promise.all(children.map((c) => new Promise<Extract<FromPeer, { kind: K }>>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`a floor process exited (code ${code}) while waiting for "${kind}"`));
    const onMessage = (m: FromPeer) => {
      if (m.kind !== kind) return;
      c.off('message', onMessage);
      c.off('exit', onExit);
      resolve(m as Extract<FromPeer, { kind: K }>);
    };
    c.on('message', onMessage);
    c.once('exit', onExit);
  })));
}

export interface Floor {
  pattern: Pattern;
  /** Median over the measured steps. */
  stepSec: number;
  /** CPU of all three processes per step, median over the measured steps. */
  cpuSec: number;
}

/** Moves the pattern's bytes `steps` times after a warm-up step; CPU and time per step. */
export async function measureFloor(pattern: Pattern, nodeBytes: number, steps: number): Promise<Floor> {
  const bytes = patternBytes(pattern, nodeBytes);
  const children = bytes.map(() => fork(fileURLToPath(import.meta.url), ['--floor-peer'], { stdio: 'inherit' }));
  try {
    const ports = (await fromEach(children, 'port')).map((m) => m.port);
    const ready = fromEach(children, 'ready');
    children.forEach((c, index) => c.send({ kind: 'connect', index, ports, bytes } satisfies ToPeer));
    await ready;
    const stepSec: number[] = [];
    const cpu: number[] = [];
    let before = 0;
    for (let s = 0; s <= steps; s++) {
      const t0 = performance.now();
      const done = fromEach(children, 'done');
      children.forEach((c) => c.send({ kind: 'go' } satisfies ToPeer));
      const after = (await done).reduce((n, m) => n + m.cpuSec, 0);
      if (s > 0) {
        stepSec.push((performance.now() - t0) / 1000);
        cpu.push(after - before);
      }
      before = after;
    }
    return { pattern, stepSec: median(stepSec), cpuSec: median(cpu) };
  } finally {
    children.forEach((c) => c.kill('SIGKILL'));
  }
}

if (process.argv.includes('--floor-peer') && process.argv[1] === fileURLToPath(import.meta.url)) runPeer();
