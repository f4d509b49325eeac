import type { WebSocket } from 'ws';
import { controlFrame, ProtocolError } from './frames.js';
import type { CoordinatorMessage, NodeMessage } from './protocol.js';

interface ReplyExpect {
  check: (m: NodeMessage) => unknown;
  resolve: (value: never) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Pings go out at least five times per heartbeat timeout. */
const pingEveryMs = (timeoutMs: number) => Math.min(1000, timeoutMs / 5);
/** A WebSocket close reason is at most 123 bytes. */
const closeReason = (reason: string) => Buffer.from(reason).subarray(0, 120).toString().replace(/\uFFFD$/, '');

/**
 * Whether a node is alive: it is while it answers pings or drains what we send it (a ping can
 * wait behind a large transfer). A tick that fires late means this process stalled, which is not
 * the node's fault. Times are passed in, so it needs no clock.
 */
export class Liveness {
  private lastHeard: number;
  private lastTick: number;
  private lastBuffered = 0;

  constructor(private readonly everyMs: number, now: number) {
    this.lastHeard = now;
    this.lastTick = now;
  }

  heard(now: number): void {
    this.lastHeard = now;
  }

  /** A heartbeat tick, with the bytes still queued to the node; returns the silence so far (ms). */
  tick(now: number, buffered: number): number {
    if (now - this.lastTick > 3 * this.everyMs || buffered < this.lastBuffered) this.lastHeard = now;
    this.lastTick = now;
    this.lastBuffered = buffered;
    return this.silentMs(now);
  }

  silentMs(now: number): number {
    return now - this.lastHeard;
  }
}

/**
 * The coordinator's WebSocket to one node: counts the bytes, pings it and closes it when it goes
 * silent, matches control replies to their requests under deadlines, and closes once, with a
 * reason that fails every request still waiting and goes to the close handlers.
 */
export class NodeLink {
  private isClosed = false;
  private left = false;
  private sent = 0;
  private received = 0;
  private readonly replies = new Map<string, ReplyExpect>();
  private readonly closeHandlers: Array<(reason: string) => void> = [];
  private readonly liveness: Liveness;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(private readonly ws: WebSocket, heartbeatTimeoutMs: number, onFrame: (data: Buffer) => void) {
    const every = pingEveryMs(heartbeatTimeoutMs);
    this.liveness = new Liveness(every, performance.now());
    ws.on('message', (data: Buffer) => {
      if (this.closed) return;
      this.received += data.length;
      this.liveness.heard(performance.now());
      onFrame(data);
    });
    ws.on('pong', () => this.liveness.heard(performance.now()));
    ws.on('close', (code, why) => this.close(this.leftCleanly ? 'it left' : `connection closed (code ${code}${why.length ? `, ${why.toString()}` : ''})`));
    ws.on('error', (err) => this.close(`connection error: ${err.message}`));
    this.heartbeat = setInterval(() => {
      const silent = this.liveness.tick(performance.now(), this.ws.bufferedAmount);
      if (silent > heartbeatTimeoutMs) this.close(`no heartbeat for ${(silent / 1000).toFixed(1)} s`);
      else this.ws.ping();
    }, every);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** True when the node said it was leaving (Ctrl-C) rather than failing. */
  get leftCleanly(): boolean {
    return this.left;
  }

  /** The node said it is leaving: its close is then a departure, not a failure. */
  markLeft(): void {
    this.left = true;
  }

  /** Seconds since the node last answered a ping or drained what was sent to it. */
  silentSec(): number {
    return this.liveness.silentMs(performance.now()) / 1000;
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

  sendControl(message: CoordinatorMessage): void {
    this.send(controlFrame(message));
  }

  /** Sends the frames (made as they go), at most `window` in flight; resolves when all went out or the link closed. */
  sendWindowed(frames: Array<() => Buffer>, window: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let next = 0;
      let inFlight = 0;
      const pump = () => {
        while (!this.closed && inFlight < window && next < frames.length) {
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
  }

  /** Sends a control message and waits for its reply (`kind` and `task` name it); no reply within `timeoutMs` closes the link. */
  request<T>(message: CoordinatorMessage, kind: NodeMessage['kind'], task: number, check: (m: NodeMessage) => T, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const timer = setTimeout(() => this.close(`no ${kind} reply within ${(timeoutMs / 1000).toFixed(0)} s`), timeoutMs);
      this.replies.set(`${kind}:${task}`, { check, resolve: resolve as (v: never) => void, reject, timer });
      this.sendControl(message);
    });
  }

  /** Resolves the request `m` answers, once its check passes; a message no request waits for is a ProtocolError. */
  reply(m: NodeMessage): void {
    const key = `${m.kind}:${'task' in m ? m.task : 0}`;
    const r = this.replies.get(key);
    if (!r) throw new ProtocolError(`unexpected "${m.kind}" message`);
    const value = r.check(m);
    this.replies.delete(key);
    clearTimeout(r.timer);
    r.resolve(value as never);
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

  /** Closes the connection (idempotent), fails the requests still waiting with `reason` and tells the close handlers. */
  close(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    clearInterval(this.heartbeat);
    const err = new Error(reason);
    for (const r of this.replies.values()) {
      clearTimeout(r.timer);
      r.reject(err);
    }
    this.replies.clear();
    try {
      if (this.ws.readyState === this.ws.OPEN) this.ws.close(1008, closeReason(reason));
    } finally {
      setTimeout(() => this.ws.terminate(), 1000).unref();
      for (const h of this.closeHandlers) h(reason);
    }
  }
}
