import { assignSlots, reassignSlots, type Capacity } from '../math/assign.js';
import type { AdamWMoments } from '../math/adamw.js';
import { roundToBf16 } from '../math/bf16.js';
import type { Piece } from '../math/pieces.js';
import { clearRows, firstNonFinite, putRows, type SparseRows } from '../math/reduce.js';
import { errorMessage } from '../util/errors.js';
import type { BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import type { ParamLayout } from '../model/layout.js';
import { WorkerError, type MemberEvent, type MemberInfo, type StepReport, type StepRequest, type WorkerGroup } from './group.js';
import { LocalMember, type Member } from './member.js';
import { Downstream } from './downstream.js';
import { framePool, PIECE_FLOATS, reducedFrame, reducedRowsFrames, type FramePool } from './frames.js';
import type { Sample, SlotStats, WireFormat } from './protocol.js';
import { StepReducer } from './reducer.js';
import { localBytes, memberSteps, type TaskOutcome } from './step-stats.js';
import type { RemoteNode } from './remote.js';
import type { NodeServer } from './server.js';
import { ThreadPool } from './threads.js';

export interface ClusterOptions {
  layout: ParamLayout;
  backend: BackendChoice;
  kernels: KernelChoice;
  /** Worker threads in this process (0: nodes only; an optimizer thread is still started). */
  localWorkers: number;
  /** Slots per step. Default: the workers present at start, at most `maxSlots`. */
  slots?: number;
  maxSlots: number;
  /** Remote nodes: where they join, and how many to wait for before the first step. */
  server?: NodeServer;
  nodes?: number;
  wire?: WireFormat;
  pieceFloats?: number;
  /** Seconds to wait for a node when no worker is left. */
  waitTimeoutSec?: number;
  /** Compare the nodes' mirrored weights with ours every N steps (0: never). */
  checksumEvery?: number;
  /** Ends a wait for nodes (Ctrl-C). */
  stop?: AbortSignal;
  /** Test hook for the local threads (see worker/thread.ts). */
  fault?: string | null;
}

function divergence(step: number, slots: number[]): WorkerError {
  return new WorkerError('the run', `step ${step}`, `slot${slots.length === 1 ? '' : 's'} ${slots.join(', ')} gave a NaN or infinite gradient: it diverged (try a lower --lr)`);
}

/**
 * The one WorkerGroup: this process's threads and any remote nodes, as interchangeable members.
 * Every step's slots are placed on the live members; their partial sums are reduced in the
 * canonical tree order as pieces arrive, each finished piece is streamed to the nodes (which
 * mirror the weights), and after the last one the coordinator and every node apply the same
 * AdamW step. A node that fails mid-step has its slots recomputed elsewhere in the same step.
 */
export class Cluster implements WorkerGroup {
  private readonly pool: ThreadPool;
  private readonly local: LocalMember | null;
  private nodes: RemoteNode[] = [];
  private assignment = new Map<number, number[]>();
  private slotCount = 0;
  /** The step under way, or the next one: what membership events are recorded against. */
  private step = 0;
  private taskCounter = 0;
  private backendName = '';
  private readonly listeners: Array<(e: MemberEvent) => void> = [];
  private readonly wire: WireFormat;
  private readonly pieces: Piece[];
  /** Memory for the nodes' partial sums while they wait for their piece's sum, and for the frames of the sums. */
  private readonly frames: FramePool;
  /** The step under way and what of its reduced gradient the nodes already have (for late joiners). */
  private current: { step: number; pieces: Piece[]; rows: SparseRows | null } | null = null;

  constructor(private readonly opts: ClusterOptions) {
    const { layout, localWorkers } = opts;
    this.wire = opts.wire ?? 'fp32';
    this.pool = new ThreadPool({
      threads: Math.max(1, localWorkers), layout, backend: opts.backend, kernels: opts.kernels, withModel: localWorkers > 0,
      pieceFloats: opts.pieceFloats ?? PIECE_FLOATS, fault: opts.fault ?? null,
    });
    this.pieces = this.pool.pieces;
    this.frames = framePool(this.pool.pieceFloats);
    this.local = localWorkers > 0
      ? new LocalMember({ id: 0, kind: 'local', host: 'local', threads: localWorkers, backend: opts.backend, kernels: opts.kernels }, this.pool)
      : null;
  }

  get slots(): number {
    return this.slotCount;
  }

  get weights(): Float32Array {
    return this.pool.weights;
  }

  get moments(): AdamWMoments {
    return this.pool.moments;
  }

  private liveMembers(): Member[] {
    return [...(this.local ? [this.local] : []), ...this.nodes];
  }

  members(): MemberInfo[] {
    return this.liveMembers().map((m) => m.info);
  }

  description(): string {
    const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
    const parts: string[] = [];
    if (this.nodes.length > 0) parts.push(`${plural(this.nodes.length, 'node')} (${plural(this.nodes.reduce((n, m) => n + m.info.threads, 0), 'thread')})`);
    if (this.local) parts.push(plural(this.local.info.threads, this.nodes.length ? 'local thread' : 'worker thread'));
    return `${parts.join(' + ')}, ${plural(this.slotCount, 'slot')} per step`;
  }

  onEvent(listener: (e: MemberEvent) => void): void {
    this.listeners.push(listener);
  }

  private emit(e: MemberEvent): void {
    for (const l of this.listeners) l(e);
  }

  async start(state: { weights: Float32Array; moments?: AdamWMoments; version: number }): Promise<string> {
    this.pool.weights.set(state.weights);
    if (state.moments) {
      this.pool.moments.m.set(state.moments.m);
      this.pool.moments.v.set(state.moments.v);
    }
    this.pool.publish(state.version);
    this.step = state.version;
    if (this.local) {
      const started = await this.pool.start();
      this.backendName = started.backend;
      this.local.info.backend = started.backend;
      this.local.info.kernels = started.kernels;
    }
    // Without local threads, at least one node must be there to place the slots on.
    const wanted = Math.max(this.opts.nodes ?? 0, this.local ? 0 : 1);
    while (this.nodes.length < wanted) {
      if (!(await this.opts.server!.waitForJoin(Infinity, this.opts.stop))) throw new WorkerError('the coordinator', 'start-up', 'stopped while waiting for nodes');
      await this.admit(state.version);
    }
    await this.admit(state.version);
    const threads = this.liveMembers().reduce((n, m) => n + m.info.threads, 0);
    this.slotCount = this.opts.slots ?? Math.min(threads, this.opts.maxSlots);
    this.rebalance();
    this.backendName ||= this.nodes[0]?.info.backend ?? this.opts.backend;
    return this.backendName;
  }

  /** Sends the state of `version` to nodes that have joined since the last step and adds them. */
  private async admit(version: number): Promise<void> {
    const joined = this.opts.server?.takeJoined() ?? [];
    for (const node of joined) {
      try {
        await node.sendState(this.pool.weights, this.pool.moments, version);
        if (this.current) this.replay(node, this.current);
      } catch (err) {
        node.close(`could not send it the weights: ${(err as Error).message}`);
        continue;
      }
      this.nodes.push(node);
      node.onClose((reason) => this.lose(node, reason));
      this.emit({ event: 'join', step: version, member: node.info.id, host: node.info.host, threads: node.info.threads, backend: node.info.backend, kernels: node.info.kernels });
    }
    if (joined.length > 0 && this.slotCount > 0) this.rebalance();
  }

  /** Sends a node that joined mid-step what the others already have of the step's reduced gradient. */
  private replay(node: RemoteNode, current: { step: number; pieces: Piece[]; rows: SparseRows | null }): void {
    for (const piece of current.pieces) node.send(reducedFrame(current.step, piece.index, this.pool.reduced.subarray(piece.start, piece.end), this.wire));
    if (current.rows) for (const f of reducedRowsFrames(current.step, current.rows, this.opts.layout.config.embDim, this.pool.pieceFloats)) node.send(f);
  }

  private rebalance(): void {
    const caps: Capacity[] = this.liveMembers().map((m) => ({ id: m.info.id, threads: m.info.threads }));
    this.assignment = caps.length > 0 ? assignSlots(this.slotCount, caps) : new Map();
  }

  /** Removes a node (idempotent); its slots are reassigned by whoever is waiting for them. */
  private lose(node: RemoteNode, reason: string, event: MemberEvent['event'] = 'lost'): void {
    if (!this.nodes.includes(node)) return;
    this.nodes = this.nodes.filter((n) => n !== node);
    node.close(reason);
    this.emit({ event: node.leftCleanly ? 'leave' : event, step: this.step, member: node.info.id, host: node.info.host, threads: node.info.threads, reason });
    this.rebalance();
  }

  private member(id: number): Member {
    return this.liveMembers().find((m) => m.info.id === id)!;
  }

  /**
   * Runs `start` for every slot on the live members and re-places the slots of any node that
   * fails until every slot has a result. A failure of the local threads is fatal.
   */
  private async runSlots<T extends { slot: number }>(
    step: number, slots: number[], start: (member: Member, slots: number[], task: number) => Promise<T[]>, onDrop: (task: number) => void,
  ): Promise<{ results: Map<number, T>; outcomes: Array<TaskOutcome<T>> }> {
    const results = new Map<number, T>();
    const outcomes: Array<TaskOutcome<T>> = [];
    const inflight = new Map<number, { member: Member; slots: number[]; outcome: Promise<TaskOutcome<T>> }>();
    const launch = (member: Member, mine: number[]) => {
      const task = ++this.taskCounter;
      const sentAt = performance.now();
      const done = (o: { result?: T[]; error?: unknown }): TaskOutcome<T> => ({ member, task, slots: mine, sentAt, doneAt: performance.now(), ...o });
      const outcome = start(member, mine, task).then((result) => done({ result }), (error: unknown) => done({ error }));
      inflight.set(task, { member, slots: mine, outcome });
    };
    const wanted = new Set(slots);
    if (this.liveMembers().length === 0) await this.waitForWorkers(step);
    // A NaN or infinity from one node is that node's fault; from a second one, the run's.
    const nonFinite = new Set<number>();
    for (const [id, mine] of this.assignment) {
      const own = mine.filter((s) => wanted.has(s));
      if (own.length > 0) launch(this.member(id), own);
    }
    while (inflight.size > 0) {
      const o = await Promise.race([...inflight.values()].map((t) => t.outcome));
      inflight.delete(o.task);
      outcomes.push(o);
      if (o.result) {
        for (const r of o.result) results.set(r.slot, r);
        continue;
      }
      if (o.member === this.local) throw o.error;
      onDrop(o.task);
      this.lose(o.member as RemoteNode, errorMessage(o.error));
      // Nodes still in flight may have failed the same way already (they all diverge at once).
      for (const m of [o.member, ...[...inflight.values()].map((t) => t.member)]) {
        if (m !== this.local && (m as RemoteNode).sentNonFinite) nonFinite.add(m.info.id);
      }
      if (nonFinite.size >= 2) throw divergence(step, o.slots);
      const live = this.liveMembers().length > 0 ? this.liveMembers() : await this.waitForWorkers(step);
      const load = new Map<number, number>();
      for (const t of inflight.values()) load.set(t.member.info.id, (load.get(t.member.info.id) ?? 0) + t.slots.length);
      for (const [id, moved] of reassignSlots(o.slots, live.map((m) => ({ id: m.info.id, threads: m.info.threads })), load)) {
        const m = this.member(id);
        this.emit({ event: 'reassign', step, member: id, host: m.info.host, threads: m.info.threads, slots: moved });
        launch(m, moved);
      }
    }
    return { results, outcomes };
  }

  /** No worker left: say so, then wait for a node to join (it receives the current state). */
  private async waitForWorkers(step: number): Promise<Member[]> {
    const timeout = this.opts.waitTimeoutSec ?? 600;
    const deadline = performance.now() + timeout * 1000;
    this.emit({ event: 'waiting', step, member: -1, host: '', threads: 0, reason: `no worker left; waiting up to ${timeout} s for a node to join` });
    while (this.liveMembers().length === 0) {
      const joined = await this.opts.server?.waitForJoin(deadline - performance.now(), this.opts.stop);
      if (this.opts.stop?.aborted) throw new WorkerError('every worker', `step ${step}`, 'stopped while waiting for a node');
      if (!joined) throw new WorkerError('every worker', `step ${step}`, `all workers were lost and none joined within ${timeout} s`);
      await this.admit(step);
    }
    return this.liveMembers();
  }

  async trainStep(req: StepRequest): Promise<StepReport> {
    const { step } = req;
    if (req.shards.length !== this.slotCount) throw new Error(`trainStep: ${req.shards.length} shards for ${this.slotCount} slots`);
    this.step = step;
    await this.admit(step);
    const traffic0 = new Map(this.nodes.map((n) => [n.info.id, n.traffic()]));
    const t0 = performance.now();
    const { layout } = this.opts;
    const D = layout.config.embDim;
    const tok = this.pool.reduced.subarray(layout.tokEmb.offset, layout.tokEmb.offset + layout.tokEmb.size);
    const current = { step, pieces: [] as Piece[], rows: null as SparseRows | null };
    this.current = current;
    let reduceMs = 0;
    // The nodes' partials of each piece, in pool memory until the piece is summed.
    const held = this.pieces.map((): Float32Array[] => []);
    const downstream = new Downstream(step, this.slotCount, this.wire, this.pieces, this.frames);
    const reducer = new StepReducer(this.slotCount, this.pieces, D, (piece, sum) => {
      if (this.wire === 'bf16') roundToBf16(sum);
      this.pool.reduced.set(sum, piece.start);
      current.pieces.push(piece);
      for (const h of held[piece.index]!.splice(0)) this.frames.give(h.buffer);
      downstream.sum(this.nodes, piece, this.pool.reduced.subarray(piece.start, piece.end));
    }, (rows) => {
      putRows(tok, rows, D);
      current.rows = rows;
      const frames = reducedRowsFrames(step, rows, D, this.pool.pieceFloats);
      for (const n of this.nodes) for (const f of frames) n.send(f);
    });
    const { results, outcomes } = await this.runSlots<SlotStats>(step, req.shards.map((_, s) => s), (member, slots, task) => {
      const node = member === this.local ? null : (member as RemoteNode);
      if (node) downstream.launch(node, slots);
      return member.train({ step, slotCount: this.slotCount, slots: slots.map((slot) => ({ slot, samples: req.shards[slot]! })), dropout: req.dropout }, (p) => {
        const r0 = performance.now();
        // Nodes' frames are checked on arrival; our own threads' sums here.
        if (!node && firstNonFinite(p.kind === 'dense' ? p.data : p.rows.values) >= 0) throw divergence(step, slots);
        if (p.kind !== 'dense') {
          reducer.add(task, p);
        } else if (!node) {
          // Our threads' sums never crossed the wire: in bf16 a node would get them rounded.
          downstream.partial(task, null, this.nodes, p.node, p.piece, p.data, this.wire === 'fp32');
          reducer.add(task, p);
        } else {
          downstream.partial(task, node, this.nodes, p.node, p.piece, p.data, true);
          const data = this.frames.copy(p.data);
          held[p.piece]!.push(data);
          reducer.add(task, { ...p, data });
        }
        reduceMs += performance.now() - r0;
      });
    }, (task) => {
      reducer.drop(task);
      downstream.drop(task);
    });
    if (!reducer.complete) throw new Error(`step ${step}: every slot reported but the reduction is incomplete`);
    const t1 = performance.now();

    const ordered = [...results.values()].sort((a, b) => a.slot - b.slot);
    const tokens = ordered.reduce((n, r) => n + r.tokens, 0);
    const lossSum = ordered.reduce((s, r) => s + r.sampleLoss.reduce((a, b) => a + b, 0), 0);
    const gradScale = 1 / tokens;
    for (const n of this.nodes) n.commit(step, gradScale, req.adam);
    await this.pool.adamw(step + 1, gradScale, req.adam);
    clearRows(tok, current.rows!.rows, D);
    this.pool.release();
    this.current = null;
    const t2 = performance.now();
    this.pool.publish(step + 1);
    this.step = step + 1;
    const every = this.opts.checksumEvery ?? 0;
    if (every > 0 && this.nodes.length > 0 && (step + 1) % every === 0) await this.verifyMirrors(step + 1);
    const t3 = performance.now();

    const members = memberSteps(outcomes, this.nodes.map((n) => ({ id: n.info.id, before: traffic0.get(n.info.id), now: n.traffic(), silentSec: n.silentSec() })));
    const workerComputeSec = ordered.map((r) => r.computeMs / 1000);
    const computeSec = Math.max(...workerComputeSec);
    const netBytes = members.reduce((n, m) => n + m.sentBytes + m.receivedBytes, 0);
    return {
      loss: lossSum / tokens, tokens, stepSec: (t3 - t0) / 1000, computeSec, workerComputeSec,
      waitSec: Math.max(0, (t1 - t0) / 1000 - computeSec), reduceSec: reduceMs / 1000, optimizerSec: (t2 - t1) / 1000, publishSec: (t3 - t2) / 1000,
      heapBytes: Math.max(...ordered.map((r) => r.heapBytes)), liveTensors: Math.max(...ordered.map((r) => r.numTensors)),
      bytesMoved: localBytes(this.opts.layout, this.local?.info.threads ?? 0, outcomes.filter((o) => o.member === this.local)) + netBytes, members,
    };
  }

  /** Asks every node for the hash of its weights; a node whose copy differs is dropped. */
  private async verifyMirrors(version: number): Promise<void> {
    const ours = await this.pool.hash();
    await Promise.all(this.nodes.map(async (n) => {
      try {
        const theirs = await n.checksum(version, ours);
        if (theirs !== ours) this.lose(n, `its weights after step ${version} differ from the coordinator's (checksum ${theirs.slice(0, 12)} vs ${ours.slice(0, 12)})`, 'diverged');
      } catch (err) {
        this.lose(n, (err as Error).message);
      }
    }));
  }

  async losses(version: number, shards: Sample[][], chunk: number): Promise<number[][]> {
    const slots = shards.map((s, i) => (s.length > 0 ? i : -1)).filter((i) => i >= 0);
    const { results } = await this.runSlots(version, slots, (member, mine) =>
      member.losses(version, mine.map((slot) => ({ slot, samples: shards[slot]! })), chunk), () => {});
    return shards.map((_, slot) => results.get(slot)?.sampleLoss ?? []);
  }

  async generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]> {
    for (;;) {
      const member = this.liveMembers()[0] ?? (await this.waitForWorkers(version))[0]!;
      try {
        return await member.generate(version, prompt, maxNewTokens);
      } catch (err) {
        if (member === this.local) throw err;
        this.lose(member as RemoteNode, (err as Error).message);
      }
    }
  }

  async close(reason = 'the run ended'): Promise<void> {
    const nodes = this.nodes;
    this.nodes = [];
    await Promise.all(nodes.map((n) => n.shutdown(reason)));
    await this.opts.server?.close(reason);
    await this.pool.close();
  }
}
