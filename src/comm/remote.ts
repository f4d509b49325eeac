import type { WebSocket } from 'ws';
import type { AdamWMoments, AdamWOptions } from '../math/adamw.js';
import type { Piece } from '../math/pieces.js';
import { median } from '../math/stats.js';
import { maximalSubtrees, nodeKey, type TreeNode } from '../math/tree.js';
import type { ParamLayout } from '../model/layout.js';
import { errorMessage } from '../util/errors.js';
import {
  CONTROL_BYTES, controlFrame, decodeFrame, denseFrame, denseValues, FRAME, NonFiniteError, ProtocolError, RowsAssembler, rowsPerFrame, sampleBytes,
  type TensorHeader,
} from './frames.js';
import type { MemberInfo } from './group.js';
import type { Member, SlotLoss } from './member.js';
import { parseNodeMessage } from './messages.js';
import type { CoordinatorMessage, NodeMessage, Partial, SlotStats, WireFormat } from './protocol.js';
import type { SlotWork, TrainWork } from './threads.js';

export interface RemoteContext {
  layout: ParamLayout;
  pieces: Piece[];
  wire: WireFormat;
  pieceFloats: number;
  heartbeatTimeoutMs: number;
}

/** A subtree whose partial sums a node owes: the pieces received so far and its rows. */
interface SubtreeState {
  node: TreeNode;
  pieces: Set<number>;
  rows: RowsAssembler;
}

/** A train task in flight: what the node owes and what it has sent. */
interface TrainExpect {
  work: TrainWork;
  sink: (p: Partial) => void;
  subtrees: Map<string, SubtreeState>;
  resolve: (r: SlotStats[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  sentAt: number;
}

interface ReplyExpect {
  check: (m: NodeMessage) => unknown;
  resolve: (value: never) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** How long a node may take to load the weights and start its threads, or to do its first step. */
const FIRST_TIME_MS = 10 * 60_000;
/** Weight frames in flight while a node loads the state (the rest waits: memory stays bounded). */
const STATE_WINDOW = 16;
/** Pings go out at least five times per heartbeat timeout. */
const pingEveryMs = (timeoutMs: number) => Math.min(1000, timeoutMs / 5);
const samplesOf = (work: SlotWork[]) => work.reduce((n, w) => n + w.samples.length, 0);
/** A WebSocket close reason is at most 123 bytes. */
const closeReason = (reason: string) => Buffer.from(reason).subarray(0, 120).toString().replace(/\uFFFD$/, '');

/**
 * A remote node as the coordinator sees it: a Member whose tasks go over its WebSocket, and a
 * mirror that receives the reduced gradient and applies the same AdamW step. Every frame it sends
 * is checked against what it owes (its task, its subtrees, each piece once, sizes, finite
 * values, rows among its slots' tokens); anything else closes the connection, and the cluster
 * recomputes its slots elsewhere.
 */
export class RemoteNode implements Member {
  closed = false;
  /** True when the node said it was leaving (Ctrl-C) rather than failing. */
  leftCleanly = false;
  /** True when it was closed for sending a NaN or infinite gradient. */
  sentNonFinite = false;
  private sent = 0;
  private received = 0;
  private nextTask = 1;
  private readonly trains = new Map<number, TrainExpect>();
  private readonly replies = new Map<string, ReplyExpect>();
  private readonly closeHandlers: Array<(reason: string) => void> = [];
  /** Recent train tasks' time per sample: deadlines scale with it. */
  private readonly sampleMs: number[] = [];
  private lastHeard = performance.now();
  private lastTick = performance.now();
  private lastBuffered = 0;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(private readonly ws: WebSocket, readonly info: MemberInfo, private readonly ctx: RemoteContext) {
    ws.on('message', (data: Buffer) => this.onMessage(data));
    ws.on('pong', () => {
      this.lastHeard = performance.now();
    });
    ws.on('close', (code, why) => this.close(this.leftCleanly ? 'it left' : `connection closed (code ${code}${why.length ? `, ${why.toString()}` : ''})`));
    ws.on('error', (err) => this.close(`connection error: ${err.message}`));
    const every = pingEveryMs(ctx.heartbeatTimeoutMs);
    this.heartbeat = setInterval(() => this.beat(every), every);
  }

  /**
   * A node is alive while it answers pings or drains what we send it (a ping can wait behind a
   * large transfer). A tick that fires late means this process stalled, which is not the node's fault.
   */
  private beat(every: number): void {
    const now = performance.now();
    const buffered = this.ws.bufferedAmount;
    if (now - this.lastTick > 3 * every || buffered < this.lastBuffered) this.lastHeard = now;
    this.lastTick = now;
    this.lastBuffered = buffered;
    const silent = now - this.lastHeard;
    if (silent > this.ctx.heartbeatTimeoutMs) this.close(`no heartbeat for ${(silent / 1000).toFixed(1)} s`);
    else this.ws.ping();
  }

  /** Seconds since the node last answered a ping or drained what was sent to it. */
  silentSec(): number {
    return (performance.now() - this.lastHeard) / 1000;
  }

  traffic(): { sent: number; received: number } {
    return { sent: this.sent, received: this.received };
  }

  onClose(handler: (reason: string) => void): void {
    this.closeHandlers.push(handler);
  }

  send(frame: Buffer, done?: () => void): void {
    if (this.closed) return;
    this.sent += frame.length;
    this.ws.send(frame, done);
  }

  private sendControl(message: CoordinatorMessage): void {
    this.send(controlFrame(message));
  }

  /**
   * Four times what this node's training has needed for `samples` samples (an evaluation's forward
   * needs less), at least three heartbeat timeouts; before its first step, 10 minutes.
   */
  private deadlineMs(samples: number): number {
    const floor = 3 * this.ctx.heartbeatTimeoutMs;
    return this.sampleMs.length === 0 ? Math.max(floor, FIRST_TIME_MS) : Math.max(floor, 4 * median(this.sampleMs) * samples);
  }

  /** Samples this node is computing now (a reassigned task queues behind its own). */
  private samplesInFlight(): number {
    return [...this.trains.values()].reduce((n, t) => n + samplesOf(t.work.slots), 0);
  }

  train(work: TrainWork, sink: (p: Partial) => void): Promise<SlotStats[]> {
    const task = this.nextTask++;
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const { embDim, vocabSize } = this.ctx.layout.config;
      const perFrame = rowsPerFrame(this.ctx.pieceFloats, embDim);
      const subtrees = new Map(maximalSubtrees(work.slots.map((s) => s.slot), work.slotCount).map((node): [string, SubtreeState] => {
        const tokens = new Set(work.slots.filter((w) => w.slot >= node[0] && w.slot < node[1]).flatMap((w) => w.samples.flatMap((s) => [...s.input])));
        const rows = new RowsAssembler(embDim, vocabSize, Math.max(1, Math.ceil(tokens.size / perFrame)), tokens);
        return [nodeKey(node), { node, pieces: new Set(), rows }];
      }));
      const limit = this.deadlineMs(this.samplesInFlight() + samplesOf(work.slots));
      const timer = setTimeout(() => this.close(`no result for step ${work.step} within ${(limit / 1000).toFixed(0)} s`), limit);
      this.trains.set(task, { work, sink, subtrees, resolve, reject, timer, sentAt: performance.now() });
      this.sendControl({ kind: 'train', task, step: work.step, slotCount: work.slotCount, dropout: work.dropout, slots: work.slots });
    });
  }

  /** Sends a control message and waits for its reply (`kind` and `task` name it). */
  private request<T>(message: CoordinatorMessage, kind: NodeMessage['kind'], task: number, check: (m: NodeMessage) => T, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const timer = setTimeout(() => this.close(`no ${kind} reply within ${(timeoutMs / 1000).toFixed(0)} s`), timeoutMs);
      this.replies.set(`${kind}:${task}`, { check, resolve: resolve as (v: never) => void, reject, timer });
      this.sendControl(message);
    });
  }

  /** Evaluation losses, in messages small enough for the wire; results in the work's order. */
  async losses(version: number, work: SlotWork[], chunk: number): Promise<SlotLoss[]> {
    const perMessage = Math.max(1, Math.floor(CONTROL_BYTES / sampleBytes(this.ctx.layout.config.contextLength)));
    const parts: SlotWork[][] = [[]];
    let room = perMessage;
    for (const w of work) {
      for (let i = 0; i < w.samples.length;) {
        if (room === 0) {
          parts.push([]);
          room = perMessage;
        }
        const samples = w.samples.slice(i, i + room);
        parts.at(-1)!.push({ slot: w.slot, samples });
        room -= samples.length;
        i += samples.length;
      }
    }
    const replies = await Promise.all(parts.map((part) => {
      const task = this.nextTask++;
      return this.request({ kind: 'loss', task, version, chunk, slots: part }, 'losses', task, (m) => {
        if (m.kind !== 'losses') throw new ProtocolError('unexpected losses reply');
        if (m.results.length !== part.length || m.results.some((r, i) => r.slot !== part[i]!.slot || r.sampleLoss.length !== part[i]!.samples.length)) {
          throw new ProtocolError(`losses reply to task ${task}: wrong results`);
        }
        return m.results;
      }, this.deadlineMs(samplesOf(work)));
    }));
    return work.map((w) => {
      const mine = replies.flat().filter((r) => r.slot === w.slot);
      return { slot: w.slot, sampleLoss: mine.flatMap((r) => r.sampleLoss), computeMs: mine.reduce((n, r) => n + r.computeMs, 0) };
    });
  }

  generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]> {
    const task = this.nextTask++;
    const vocab = this.ctx.layout.config.vocabSize;
    return this.request({ kind: 'generate', task, version, prompt, maxNewTokens }, 'generated', task, (m) => {
      if (m.kind !== 'generated') throw new ProtocolError('unexpected generated reply');
      if (m.tokens.length !== prompt.length + maxNewTokens || m.tokens.some((t) => t >= vocab)) throw new ProtocolError('generated reply: wrong tokens');
      return m.tokens;
    }, this.deadlineMs(1));
  }

  /** Sends the weights and moments of `version`, a window of frames at a time; resolves when the node is ready. */
  async sendState(weights: Float32Array, moments: AdamWMoments, version: number): Promise<void> {
    const ready = this.request({ kind: 'state', version }, 'ready', 0, (m) => {
      if (m.kind !== 'ready' || m.version !== version) throw new ProtocolError('unexpected ready reply');
      return { backend: m.backend, kernels: m.kernels };
    }, FIRST_TIME_MS);
    // It may fail while the frames still go out; it is awaited below.
    ready.catch(() => {});
    const step = this.ctx.pieceFloats;
    const frames = [weights, moments.m, moments.v].flatMap((tensor, b) =>
      Array.from({ length: Math.ceil(tensor.length / step) }, (_, d) => () =>
        denseFrame({ type: FRAME.state, wire: 'fp32', a: version, b, c: 0, d, e: 0 }, tensor.subarray(d * step, (d + 1) * step))));
    await new Promise<void>((resolve) => {
      let next = 0;
      let inFlight = 0;
      const pump = () => {
        while (!this.closed && inFlight < STATE_WINDOW && next < frames.length) {
          inFlight += 1;
          this.send(frames[next++]!(), () => {
            inFlight -= 1;
            pump();
          });
        }
        if (this.closed || (next === frames.length && inFlight === 0)) resolve();
      };
      pump();
    });
    this.sendControl({ kind: 'state-end', version });
    Object.assign(this.info, await ready);
  }

  commit(step: number, gradScale: number, adam: AdamWOptions): void {
    this.sendControl({ kind: 'commit', step, gradScale, adam });
  }

  /** The hash of the node's weights after `version` steps (ours sent along for its log). */
  checksum(version: number, hash: string): Promise<string> {
    return this.request({ kind: 'checksum', version, hash }, 'checksum-reply', 0, (m) => {
      if (m.kind !== 'checksum-reply' || m.version !== version) throw new ProtocolError('unexpected checksum reply');
      return m.hash;
    }, this.deadlineMs(1));
  }

  private onMessage(data: Buffer): void {
    if (this.closed) return;
    this.received += data.length;
    this.lastHeard = performance.now();
    try {
      const frame = decodeFrame(data);
      if (frame.type === FRAME.control) this.onControl(parseNodeMessage(frame.message));
      else if (frame.type === FRAME.partial) this.onPartial(frame.header, frame.payload);
      else if (frame.type === FRAME.partialRows) this.onRows(frame.header, frame.payload);
      else throw new ProtocolError(`a node may not send frame type ${frame.type}`);
    } catch (err) {
      this.close(`bad message: ${errorMessage(err)}`, err instanceof NonFiniteError);
    }
  }

  private trainOf(h: TensorHeader): { t: TrainExpect; s: SubtreeState } {
    const t = this.trains.get(h.a);
    if (!t) throw new ProtocolError(`frame for task ${h.a}, which is not under way`);
    const s = t.subtrees.get(nodeKey([h.b, h.c]));
    if (!s) throw new ProtocolError(`frame for slots [${h.b}, ${h.c}), which are not this node's to sum in task ${h.a}`);
    return { t, s };
  }

  private onPartial(h: TensorHeader, payload: Buffer): void {
    const { t, s } = this.trainOf(h);
    const piece = this.ctx.pieces[h.d];
    if (!piece) throw new ProtocolError(`piece ${h.d} does not exist`);
    if (s.pieces.has(h.d)) throw new ProtocolError(`piece ${h.d} of slots [${h.b}, ${h.c}) sent twice`);
    const data = denseValues(h, payload, piece.end - piece.start, this.ctx.wire);
    s.pieces.add(h.d);
    t.sink({ kind: 'dense', node: s.node, piece: h.d, data });
  }

  private onRows(h: TensorHeader, payload: Buffer): void {
    const { t, s } = this.trainOf(h);
    const rows = s.rows.add(h, payload);
    if (rows) t.sink({ kind: 'rows', node: s.node, rows });
  }

  private onControl(m: NodeMessage): void {
    switch (m.kind) {
      case 'trained':
        return this.onTrained(m.task, m.results);
      case 'failed':
        throw new ProtocolError(`it could not do task ${m.task}: ${m.reason}`);
      case 'leave':
        this.leftCleanly = true;
        this.close(`it left: ${m.reason}`);
        return;
      case 'hello':
        throw new ProtocolError('hello after the handshake');
      default: {
        const key = `${m.kind}:${'task' in m ? m.task : 0}`;
        const r = this.replies.get(key);
        if (!r) throw new ProtocolError(`unexpected "${m.kind}" message`);
        const value = r.check(m);
        this.replies.delete(key);
        clearTimeout(r.timer);
        r.resolve(value as never);
      }
    }
  }

  private onTrained(task: number, results: SlotStats[]): void {
    const t = this.trains.get(task);
    if (!t) throw new ProtocolError(`result for task ${task}, which is not under way`);
    const pieces = this.ctx.pieces.length;
    for (const s of t.subtrees.values()) {
      if (s.pieces.size !== pieces || !s.rows.done) throw new ProtocolError(`task ${task} reported done before all its partial sums arrived`);
    }
    const bySlot = new Map(results.map((r) => [r.slot, r]));
    for (const w of t.work.slots) {
      const r = bySlot.get(w.slot);
      const tokens = w.samples.reduce((n, x) => n + x.target.length, 0);
      if (!r || r.tokens !== tokens || r.sampleLoss.length !== w.samples.length) throw new ProtocolError(`task ${task}: wrong result for slot ${w.slot}`);
    }
    if (bySlot.size !== t.work.slots.length) throw new ProtocolError(`task ${task}: results for slots it was not given`);
    this.trains.delete(task);
    clearTimeout(t.timer);
    this.sampleMs.push((performance.now() - t.sentAt) / samplesOf(t.work.slots));
    this.sampleMs.splice(0, Math.max(0, this.sampleMs.length - 20));
    t.resolve(results);
  }

  /**
   * Tells the node the run is over; resolves once the connection is closed, or after the time the
   * bytes still queued need at 50 MB/s plus 2 s (the message goes after them).
   */
  async shutdown(reason: string): Promise<void> {
    if (this.closed) return;
    const closed = new Promise<void>((resolve) => {
      this.ws.once('close', () => resolve());
      setTimeout(resolve, Math.min(120_000, 2000 + this.ws.bufferedAmount / 50_000)).unref();
    });
    this.sendControl({ kind: 'shutdown', reason });
    this.ws.close(1000, 'run ended');
    await closed;
    this.close(reason);
  }

  /** Closes the connection (idempotent) and fails whatever was pending with `reason`. */
  close(reason: string, nonFinite = false): void {
    if (this.closed) return;
    this.closed = true;
    this.sentNonFinite = nonFinite;
    clearInterval(this.heartbeat);
    const err = new Error(reason);
    for (const t of this.trains.values()) {
      clearTimeout(t.timer);
      t.reject(err);
    }
    for (const r of this.replies.values()) {
      clearTimeout(r.timer);
      r.reject(err);
    }
    this.trains.clear();
    this.replies.clear();
    try {
      if (this.ws.readyState === this.ws.OPEN) this.ws.close(1008, closeReason(reason));
    } finally {
      setTimeout(() => this.ws.terminate(), 1000).unref();
      for (const h of this.closeHandlers) h(reason);
    }
  }
}
