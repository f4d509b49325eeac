import type { WebSocket } from 'ws';
import type { AdamWMoments, AdamWOptions } from '../math/adamw.js';
import { median } from '../math/stats.js';
import { errorMessage } from '../util/errors.js';
import { CONTROL_BYTES, decodeFrame, denseFrame, FRAME, NonFiniteError, ProtocolError, sampleBytes, stateTensors } from './frames.js';
import type { MemberInfo } from './group.js';
import type { Member, SlotLoss } from './member.js';
import { parseNodeMessage } from './messages.js';
import { NodeLink } from './node-link.js';
import { OwedSums, type OwedContext } from './owed.js';
import type { NodeMessage, Partial, SlotStats } from './protocol.js';
import type { SlotWork, TrainWork } from './threads.js';

export interface RemoteContext extends OwedContext {
  heartbeatTimeoutMs: number;
}

/** A train task in flight: what the node owes, where its partial sums go, and its promise. */
interface TrainExpect {
  owed: OwedSums;
  sink: (p: Partial) => void;
  resolve: (r: SlotStats[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  sentAt: number;
}

/** How long a node may take to load the weights and start its threads, or to do its first step. */
const FIRST_TIME_MS = 10 * 60_000;
/** Weight frames in flight while a node loads the state (the rest waits: memory stays bounded). */
const STATE_WINDOW = 16;
const samplesOf = (work: SlotWork[]) => work.reduce((n, w) => n + w.samples.length, 0);

/**
 * A remote node as the coordinator sees it: a Member whose tasks go over its link, and a
 * mirror that receives the reduced gradient and applies the same AdamW step. Every frame it sends
 * is checked against what it owes (see OwedSums); anything else closes the connection, and the
 * cluster recomputes its slots elsewhere.
 */
/** A node's deadline for any reply is at least this many heartbeat timeouts. */
export const HEARTBEATS_PER_DEADLINE = 3;

export class RemoteNode implements Member {
  /** True when it was closed for sending a NaN or infinite gradient. */
  sentNonFinite = false;
  private readonly link: NodeLink;
  private nextTask = 1;
  private readonly trains = new Map<number, TrainExpect>();
  /** Recent train tasks' time per sample: deadlines scale with it. */
  private readonly sampleMs: number[] = [];

  constructor(ws: WebSocket, readonly info: MemberInfo, private readonly ctx: RemoteContext) {
    this.link = new NodeLink(ws, ctx.heartbeatTimeoutMs, (data) => this.onFrame(data));
    // The first close handler: train tasks fail before the cluster hears of the loss.
    this.link.onClose((reason) => {
      const err = new Error(reason);
      for (const t of this.trains.values()) {
        clearTimeout(t.timer);
        t.reject(err);
      }
      this.trains.clear();
    });
  }

  get closed(): boolean {
    return this.link.closed;
  }

  /** True when the node said it was leaving (Ctrl-C) rather than failing. */
  get leftCleanly(): boolean {
    return this.link.leftCleanly;
  }

  /** Seconds since the node last answered a ping or drained what was sent to it. */
  silentSec(): number {
    return this.link.silentSec();
  }

  traffic(): { sent: number; received: number } {
    return this.link.traffic();
  }

  onClose(handler: (reason: string) => void): void {
    this.link.onClose(handler);
  }

  send(frame: Buffer, done?: () => void): void {
    this.link.send(frame, done);
  }

  /**
   * Four times what this node's training has needed for `samples` samples (an evaluation's forward
   * needs less), at least three heartbeat timeouts; before its first step, 10 minutes.
   */
  private deadlineMs(samples: number): number {
    const floor = HEARTBEATS_PER_DEADLINE * this.ctx.heartbeatTimeoutMs;
    return this.sampleMs.length === 0 ? Math.max(floor, FIRST_TIME_MS) : Math.max(floor, 4 * median(this.sampleMs) * samples);
  }

  /** Samples this node is computing now (a reassigned task queues behind its own). */
  private samplesInFlight(): number {
    return [...this.trains.values()].reduce((n, t) => n + samplesOf(t.owed.work.slots), 0);
  }

  train(work: TrainWork, sink: (p: Partial) => void): Promise<SlotStats[]> {
    const task = this.nextTask++;
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const limit = this.deadlineMs(this.samplesInFlight() + samplesOf(work.slots));
      const timer = setTimeout(() => this.close(`no result for step ${work.step} within ${(limit / 1000).toFixed(0)} s`), limit);
      this.trains.set(task, { owed: new OwedSums(task, work, this.ctx), sink, resolve, reject, timer, sentAt: performance.now() });
      this.link.sendControl({ kind: 'train', task, step: work.step, slotCount: work.slotCount, dropout: work.dropout, slots: work.slots });
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
      return this.link.request({ kind: 'loss', task, version, chunk, slots: part }, 'losses', task, (m) => {
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
    return this.link.request({ kind: 'generate', task, version, prompt, maxNewTokens }, 'generated', task, (m) => {
      if (m.kind !== 'generated') throw new ProtocolError('unexpected generated reply');
      if (m.tokens.length !== prompt.length + maxNewTokens || m.tokens.some((t) => t >= vocab)) throw new ProtocolError('generated reply: wrong tokens');
      return m.tokens;
    }, this.deadlineMs(1));
  }

  /** Sends the weights and moments of `version`, a window of frames at a time; resolves when the node is ready. */
  async sendState(weights: Float32Array, moments: AdamWMoments, version: number): Promise<void> {
    const ready = this.link.request({ kind: 'state', version }, 'ready', 0, (m) => {
      if (m.kind !== 'ready' || m.version !== version) throw new ProtocolError('unexpected ready reply');
      return { backend: m.backend, kernels: m.kernels };
    }, FIRST_TIME_MS);
    // It may fail while the frames still go out; it is awaited below.
    ready.catch(() => {});
    const step = this.ctx.pieceFloats;
    const frames = stateTensors(weights, moments).flatMap((tensor, b) =>
      Array.from({ length: Math.ceil(tensor.length / step) }, (_, d) => () =>
        denseFrame({ type: FRAME.state, wire: 'fp32', a: version, b, c: 0, d, e: 0 }, tensor.subarray(d * step, (d + 1) * step))));
    await this.link.sendWindowed(frames, STATE_WINDOW);
    this.link.sendControl({ kind: 'state-end', version });
    Object.assign(this.info, await ready);
  }

  commit(step: number, gradScale: number, adam: AdamWOptions): void {
    this.link.sendControl({ kind: 'commit', step, gradScale, adam });
  }

  /** The hash of the node's weights after `version` steps (ours sent along for its log). */
  checksum(version: number, hash: string): Promise<string> {
    return this.link.request({ kind: 'checksum', version, hash }, 'checksum-reply', 0, (m) => {
      if (m.kind !== 'checksum-reply' || m.version !== version) throw new ProtocolError('unexpected checksum reply');
      return m.hash;
    }, this.deadlineMs(1));
  }

  private onFrame(data: Buffer): void {
    try {
      const frame = decodeFrame(data);
      if (frame.type === FRAME.control) this.onControl(parseNodeMessage(frame.message));
      else if (frame.type === FRAME.partial || frame.type === FRAME.partialRows) {
        const { header: h, payload } = frame;
        const t = this.trains.get(h.a);
        if (!t) throw new ProtocolError(`frame for task ${h.a}, which is not under way`);
        const p = frame.type === FRAME.partial ? t.owed.dense(h, payload) : t.owed.rows(h, payload);
        if (p) t.sink(p);
      } else throw new ProtocolError(`a node may not send frame type ${frame.type}`);
    } catch (err) {
      this.close(`bad message: ${errorMessage(err)}`, err instanceof NonFiniteError);
    }
  }

  private onControl(m: NodeMessage): void {
    switch (m.kind) {
      case 'trained':
        return this.onTrained(m.task, m.results);
      case 'failed':
        throw new ProtocolError(`it could not do task ${m.task}: ${m.reason}`);
      case 'leave':
        this.link.markLeft();
        this.close(`it left: ${m.reason}`);
        return;
      case 'hello':
        throw new ProtocolError('hello after the handshake');
      default:
        this.link.reply(m);
    }
  }

  private onTrained(task: number, results: SlotStats[]): void {
    const t = this.trains.get(task);
    if (!t) throw new ProtocolError(`result for task ${task}, which is not under way`);
    t.owed.checkResults(results);
    this.trains.delete(task);
    clearTimeout(t.timer);
    this.sampleMs.push((performance.now() - t.sentAt) / samplesOf(t.owed.work.slots));
    this.sampleMs.splice(0, Math.max(0, this.sampleMs.length - 20));
    t.resolve(results);
  }

  /** Tells the node the run is over; resolves once the connection is closed (see NodeLink.shutdown). */
  shutdown(reason: string): Promise<void> {
    return this.link.shutdown(reason);
  }

  /** Closes the connection (idempotent) and fails whatever was pending with `reason`. */
  close(reason: string, nonFinite = false): void {
    if (this.closed) return;
    this.sentNonFinite = nonFinite;
    this.link.close(reason);
  }
}
