import type { WebSocket } from 'ws';
import type { AdamWMoments, AdamWOptions } from '../math/adamw.js';
import { median } from '../math/stats.js';
import type { Piece } from '../math/pieces.js';
import type { SparseRows } from '../math/reduce.js';
import { maximalSubtrees, nodeKey, type TreeNode } from '../math/tree.js';
import type { ParamLayout } from '../model/layout.js';
import { errorMessage } from '../util/errors.js';
import { controlFrame, decodeFrame, denseFrame, denseValues, FRAME, ProtocolError, rowValues, type TensorHeader } from './frames.js';
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

/** A subtree whose partial sums a node owes: the pieces and row frames received so far. */
interface SubtreeState {
  node: TreeNode;
  pieces: Set<number>;
  rows: SparseRows[];
  parts: number;
  done: boolean;
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
  kind: 'losses' | 'generated' | 'ready' | 'checksum-reply';
  check: (m: NodeMessage) => unknown;
  resolve: (value: never) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** How long a node may take to load the weights and start its threads. */
const STATE_TIMEOUT_MS = 10 * 60_000;
/** Pings go out at least five times per heartbeat timeout. */
const pingEveryMs = (timeoutMs: number) => Math.min(1000, timeoutMs / 5);

/**
 * A remote node as the coordinator sees it: a Member whose tasks go over its WebSocket, and a
 * mirror that receives the reduced gradient and applies the same AdamW step. Every frame it sends
 * is checked against what it owes (its task, its subtrees, each piece once, sizes, finite
 * values); anything else closes the connection, and the cluster recomputes its slots elsewhere.
 */
export class RemoteNode implements Member {
  closed = false;
  /** True when the node said it was leaving (Ctrl-C) rather than failing. */
  leftCleanly = false;
  private sent = 0;
  private received = 0;
  private nextTask = 1;
  private readonly trains = new Map<number, TrainExpect>();
  private readonly replies = new Map<string, ReplyExpect>();
  private readonly closeHandlers: Array<(reason: string) => void> = [];
  private readonly recentTaskMs: number[] = [];
  private lastHeard = performance.now();
  private readonly heartbeat: NodeJS.Timeout;

  constructor(private readonly ws: WebSocket, readonly info: MemberInfo, private readonly ctx: RemoteContext) {
    ws.on('message', (data: Buffer) => this.onMessage(data));
    ws.on('pong', () => {
      this.lastHeard = performance.now();
    });
    ws.on('close', (code, why) => this.close(this.leftCleanly ? 'it left' : `connection closed (code ${code}${why.length ? `, ${why.toString()}` : ''})`));
    ws.on('error', (err) => this.close(`connection error: ${err.message}`));
    this.heartbeat = setInterval(() => {
      const silent = performance.now() - this.lastHeard;
      if (silent > ctx.heartbeatTimeoutMs) this.close(`no heartbeat for ${(silent / 1000).toFixed(1)} s`);
      else ws.ping();
    }, pingEveryMs(ctx.heartbeatTimeoutMs));
  }

  traffic(): { sent: number; received: number } {
    return { sent: this.sent, received: this.received };
  }

  onClose(handler: (reason: string) => void): void {
    this.closeHandlers.push(handler);
  }

  send(frame: Buffer): void {
    if (this.closed) return;
    this.sent += frame.length;
    this.ws.send(frame);
  }

  private sendControl(message: CoordinatorMessage): void {
    this.send(controlFrame(message));
  }

  /** A train task's deadline: four times this node's median task time, and at least 3 heartbeat timeouts. */
  private deadlineMs(): number {
    const floor = 3 * this.ctx.heartbeatTimeoutMs;
    return this.recentTaskMs.length === 0 ? Math.max(floor, STATE_TIMEOUT_MS) : Math.max(floor, 4 * median(this.recentTaskMs));
  }

  train(work: TrainWork, sink: (p: Partial) => void): Promise<SlotStats[]> {
    const task = this.nextTask++;
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const subtrees = new Map(maximalSubtrees(work.slots.map((s) => s.slot), work.slotCount)
        .map((node) => [nodeKey(node), { node, pieces: new Set<number>(), rows: [] as SparseRows[], parts: 0, done: false }]));
      const limit = this.deadlineMs();
      const timer = setTimeout(() => this.close(`no result for step ${work.step} within ${(limit / 1000).toFixed(0)} s`), limit);
      this.trains.set(task, { work, sink, subtrees, resolve, reject, timer, sentAt: performance.now() });
      this.sendControl({
        kind: 'train', task, step: work.step, slotCount: work.slotCount, dropout: work.dropout,
        slots: work.slots,
      });
    });
  }

  /** Sends a control message and waits for the reply of `kind` (one at a time per kind). */
  private request<T>(message: CoordinatorMessage, kind: ReplyExpect['kind'], check: (m: NodeMessage) => T, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const timer = setTimeout(() => this.close(`no ${kind} reply within ${(timeoutMs / 1000).toFixed(0)} s`), timeoutMs);
      this.replies.set(kind, { kind, check, resolve: resolve as (v: never) => void, reject, timer });
      this.sendControl(message);
    });
  }

  losses(version: number, work: SlotWork[], chunk: number): Promise<SlotLoss[]> {
    const task = this.nextTask++;
    return this.request({
      kind: 'loss', task, version, chunk,
      slots: work,
    }, 'losses', (m) => {
      if (m.kind !== 'losses' || m.task !== task) throw new ProtocolError('unexpected losses reply');
      const bySlot = new Map(m.results.map((r) => [r.slot, r]));
      for (const w of work) {
        if (bySlot.get(w.slot)?.sampleLoss.length !== w.samples.length) throw new ProtocolError(`losses reply: wrong results for slot ${w.slot}`);
      }
      if (bySlot.size !== work.length) throw new ProtocolError('losses reply: results for slots it was not given');
      return m.results;
    }, this.deadlineMs());
  }

  generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]> {
    const task = this.nextTask++;
    const vocab = this.ctx.layout.config.vocabSize;
    return this.request({ kind: 'generate', task, version, prompt, maxNewTokens }, 'generated', (m) => {
      if (m.kind !== 'generated' || m.task !== task) throw new ProtocolError('unexpected generated reply');
      if (m.tokens.length !== prompt.length + maxNewTokens || m.tokens.some((t) => t >= vocab)) throw new ProtocolError('generated reply: wrong tokens');
      return m.tokens;
    }, this.deadlineMs());
  }

  /** Sends the weights and moments of `version`; resolves when the node's threads are ready. */
  async sendState(weights: Float32Array, moments: AdamWMoments, version: number): Promise<void> {
    const ready = this.request({ kind: 'state', version }, 'ready', (m) => {
      if (m.kind !== 'ready' || m.version !== version) throw new ProtocolError('unexpected ready reply');
      return { backend: m.backend, kernels: m.kernels };
    }, STATE_TIMEOUT_MS);
    [weights, moments.m, moments.v].forEach((tensor, b) => {
      for (let d = 0, s = 0; s < tensor.length; d++, s += this.ctx.pieceFloats) {
        this.send(denseFrame({ type: FRAME.state, wire: 'fp32', a: version, b, c: 0, d, e: 0 }, tensor.subarray(s, s + this.ctx.pieceFloats)));
      }
    });
    this.sendControl({ kind: 'state-end', version });
    Object.assign(this.info, await ready);
  }

  commit(step: number, gradScale: number, adam: AdamWOptions): void {
    this.sendControl({ kind: 'commit', step, gradScale, adam });
  }

  /** The hash of the node's weights after `version` steps (ours sent along for its log). */
  checksum(version: number, hash: string): Promise<string> {
    return this.request({ kind: 'checksum', version, hash }, 'checksum-reply', (m) => {
      if (m.kind !== 'checksum-reply' || m.version !== version) throw new ProtocolError('unexpected checksum reply');
      return m.hash;
    }, this.deadlineMs());
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
      this.close(`bad message: ${errorMessage(err)}`);
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
    const { embDim, vocabSize } = this.ctx.layout.config;
    if (s.done || h.d !== s.rows.length || h.e === 0 || (s.parts !== 0 && h.e !== s.parts)) throw new ProtocolError(`rows frame ${h.d} of ${h.e} out of order`);
    const rows = rowValues(h, payload, embDim, vocabSize);
    const prev = s.rows.at(-1)?.rows;
    if (prev?.length && rows.rows.length && rows.rows[0]! <= prev[prev.length - 1]!) throw new ProtocolError('rows frames must continue in increasing row order');
    s.parts = h.e;
    s.rows.push(rows);
    if (s.rows.length < s.parts) return;
    s.done = true;
    const all = { rows: Int32Array.from(s.rows.flatMap((r) => [...r.rows])), values: new Float32Array(s.rows.reduce((n, r) => n + r.values.length, 0)) };
    let o = 0;
    for (const r of s.rows) {
      all.values.set(r.values, o);
      o += r.values.length;
    }
    t.sink({ kind: 'rows', node: s.node, rows: all });
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
        const r = this.replies.get(m.kind);
        if (!r) throw new ProtocolError(`unexpected "${m.kind}" message`);
        const value = r.check(m);
        this.replies.delete(m.kind);
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
      if (s.pieces.size !== pieces || !s.done) throw new ProtocolError(`task ${task} reported done before all its partial sums arrived`);
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
    this.recentTaskMs.push(performance.now() - t.sentAt);
    this.recentTaskMs.splice(0, Math.max(0, this.recentTaskMs.length - 20));
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
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1008, reason.slice(0, 120));
    setTimeout(() => this.ws.terminate(), 1000).unref();
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
    for (const h of this.closeHandlers) h(reason);
  }
}
