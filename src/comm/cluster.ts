import type { AdamWMoments } from '../math/adamw.js';
import { roundToBf16 } from '../math/bf16.js';
import type { Piece } from '../math/pieces.js';
import { firstNonFinite, type SparseRows } from '../math/reduce.js';
import type { BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import type { ParamLayout } from '../model/layout.js';
import { errorMessage } from '../util/errors.js';
import type { MemberEvent, MemberInfo, StepReport, StepRequest, WorkerGroup } from './group.js';
import { LocalMember } from './member.js';
import { Membership } from './membership.js';
import { divergence, runSlots } from './run-slots.js';
import { Downstream } from './downstream.js';
import { framePool, PIECE_FLOATS, reducedFrame, reducedRowsFrames, type FramePool } from './frames.js';
import type { Sample, SlotStats, WireFormat } from './protocol.js';
import { StepReducer } from './reducer.js';
import { localBytes, memberSteps } from './step-stats.js';
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

/**
 * The one WorkerGroup: this process's threads and any remote nodes, as interchangeable members.
 * Every step's slots are placed on the live members; their partial sums are reduced in the
 * canonical tree order as pieces arrive, each finished piece is streamed to the nodes (which
 * mirror the weights), and after the last one the coordinator and every node apply the same
 * AdamW step. A node that fails mid-step has its slots recomputed elsewhere in the same step.
 */
/** Nodes to wait for before the first step: without local threads, at least one to place the slots on. */
export const nodesToAwait = (nodes: number | undefined, localThreads: number): number => Math.max(nodes ?? 0, localThreads > 0 ? 0 : 1);

export class Cluster implements WorkerGroup {
  private readonly pool: ThreadPool;
  private readonly membership: Membership;
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
    const local = localWorkers > 0
      ? new LocalMember({ id: 0, kind: 'local', host: 'local', threads: localWorkers, backend: opts.backend, kernels: opts.kernels }, this.pool)
      : null;
    this.membership = new Membership({
      local, server: opts.server, waitTimeoutSec: opts.waitTimeoutSec ?? 600, stop: opts.stop,
      welcome: async (node, version) => {
        await node.sendState(this.pool.weights, this.pool.moments, version);
        if (this.current) this.replay(node, this.current);
      },
    });
  }

  get slots(): number {
    return this.membership.slotCount;
  }

  get weights(): Float32Array {
    return this.pool.weights;
  }

  get moments(): AdamWMoments {
    return this.pool.moments;
  }

  members(): MemberInfo[] {
    return this.membership.info();
  }

  description(): string {
    return this.membership.description();
  }

  onEvent(listener: (e: MemberEvent) => void): void {
    this.membership.onEvent(listener);
  }

  async start(state: { weights: Float32Array; moments?: AdamWMoments; version: number }): Promise<string> {
    this.pool.weights.set(state.weights);
    const { m, v } = this.pool.moments;
    if (state.moments) {
      m.set(state.moments.m);
      v.set(state.moments.v);
    } else {
      // Zeros written all the same: fresh memory is mapped on first touch, which costs 0.5 s here
      // at 124M, before the threads start, but made the first AdamW step on the threads 2.3 s longer.
      m.fill(0);
      v.fill(0);
    }
    this.pool.publish(state.version);
    const { local } = this.membership;
    this.membership.step = state.version;
    let backend: string | undefined;
    if (local) {
      const started = await this.pool.start();
      backend = started.backend;
      local.info.backend = started.backend;
      local.info.kernels = started.kernels;
    }
    await this.membership.awaitNodes(nodesToAwait(this.opts.nodes, local ? 1 : 0), state.version);
    await this.membership.admit(state.version);
    const threads = this.membership.live().reduce((n, m) => n + m.info.threads, 0);
    this.membership.fixSlots(this.opts.slots ?? Math.min(threads, this.opts.maxSlots));
    return backend ?? this.membership.nodes[0]?.info.backend ?? this.opts.backend;
  }

  /** Sends a node that joined mid-step what the others already have of the step's reduced gradient. */
  private replay(node: RemoteNode, current: { step: number; pieces: Piece[]; rows: SparseRows | null }): void {
    for (const piece of current.pieces) node.send(reducedFrame(current.step, piece.index, this.pool.reduced.subarray(piece.start, piece.end), this.wire));
    if (current.rows) for (const f of reducedRowsFrames(current.step, current.rows, this.opts.layout.config.embDim, this.pool.pieceFloats)) node.send(f);
  }

  async trainStep(req: StepRequest): Promise<StepReport> {
    const { step } = req;
    const group = this.membership;
    if (req.shards.length !== group.slotCount) throw new Error(`trainStep: ${req.shards.length} shards for ${group.slotCount} slots`);
    group.step = step;
    await group.admit(step);
    const traffic0 = new Map(group.nodes.map((n) => [n.info.id, n.traffic()]));
    const t0 = performance.now();
    const { layout } = this.opts;
    const D = layout.config.embDim;
    const current = { step, pieces: [] as Piece[], rows: null as SparseRows | null };
    this.current = current;
    let reduceMs = 0;
    const downstream = new Downstream(step, group.slotCount, this.wire, this.pieces, this.frames);
    // A node's partial is copied to frame memory (this.frames) as it arrives (see StepReducer.add).
    const reducer = new StepReducer(group.slotCount, this.pieces, D, (piece) => this.pool.reduced.subarray(piece.start, piece.end), (piece, sum) => {
      if (this.wire === 'bf16') roundToBf16(sum);
      current.pieces.push(piece);
      downstream.sum(group.nodes, piece, sum);
    }, (rows) => {
      current.rows = rows;
      const frames = reducedRowsFrames(step, rows, D, this.pool.pieceFloats);
      for (const n of group.nodes) for (const f of frames) n.send(f);
    }, { keep: (v) => this.frames.copy(v), release: (v) => this.frames.give(v.buffer) });
    const { results, outcomes } = await runSlots<SlotStats>(group, step, req.shards.map((_, s) => s), (member, slots, task) => {
      const node = member === group.local ? null : (member as RemoteNode);
      if (node) downstream.launch(node, slots);
      return member.train({ step, slotCount: group.slotCount, slots: slots.map((slot) => ({ slot, samples: req.shards[slot]! })), dropout: req.dropout }, (p) => {
        const r0 = performance.now();
        // Nodes' frames are checked on arrival; our own threads' sums here.
        if (!node && firstNonFinite(p.kind === 'dense' ? p.data : p.rows.values) >= 0) throw divergence(step, slots);
        if (p.kind !== 'dense') {
          reducer.add(task, p);
        } else if (!node) {
          // Our threads' sums never crossed the wire: in bf16 a node would get them rounded.
          downstream.partial(task, null, group.nodes, p.node, p.piece, p.data, this.wire === 'fp32');
          reducer.add(task, p);
        } else {
          downstream.partial(task, node, group.nodes, p.node, p.piece, p.data, true);
          reducer.add(task, p, true);
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
    for (const n of group.nodes) n.commit(step, gradScale, req.adam);
    await this.pool.applyStep(step, gradScale, req.adam, current.rows!);
    this.current = null;
    const t2 = performance.now();
    this.pool.publish(step + 1);
    group.step = step + 1;
    const every = this.opts.checksumEvery ?? 0;
    if (every > 0 && group.nodes.length > 0 && (step + 1) % every === 0) await this.verifyMirrors(step + 1);
    const t3 = performance.now();

    const members = memberSteps(outcomes, group.nodes.map((n) => ({ id: n.info.id, before: traffic0.get(n.info.id), now: n.traffic(), silentSec: n.silentSec() })));
    const workerComputeSec = ordered.map((r) => r.computeMs / 1000);
    const computeSec = Math.max(...workerComputeSec);
    const netBytes = members.reduce((n, m) => n + m.sentBytes + m.receivedBytes, 0);
    return {
      loss: lossSum / tokens, tokens, stepSec: (t3 - t0) / 1000, computeSec, workerComputeSec,
      waitSec: Math.max(0, (t1 - t0) / 1000 - computeSec), reduceSec: reduceMs / 1000, optimizerSec: (t2 - t1) / 1000, publishSec: (t3 - t2) / 1000,
      heapBytes: Math.max(...ordered.map((r) => r.heapBytes)), liveTensors: Math.max(...ordered.map((r) => r.numTensors)),
      bytesMoved: localBytes(this.opts.layout, group.local?.info.threads ?? 0, outcomes.filter((o) => o.member === group.local)) + netBytes, members,
    };
  }

  /** Asks every node for the hash of its weights; a node whose copy differs is dropped. */
  private async verifyMirrors(version: number): Promise<void> {
    const ours = await this.pool.hash();
    await Promise.all(this.membership.nodes.map(async (n) => {
      try {
        const theirs = await n.checksum(version, ours);
        if (theirs !== ours) this.membership.lose(n, `its weights after step ${version} differ from the coordinator's (checksum ${theirs.slice(0, 12)} vs ${ours.slice(0, 12)})`, 'diverged');
      } catch (err) {
        this.membership.lose(n, errorMessage(err));
      }
    }));
  }

  async losses(version: number, shards: Sample[][], chunk: number): Promise<number[][]> {
    const slots = shards.map((s, i) => (s.length > 0 ? i : -1)).filter((i) => i >= 0);
    const { results } = await runSlots(this.membership, version, slots, (member, mine) =>
      member.losses(version, mine.map((slot) => ({ slot, samples: shards[slot]! })), chunk), () => {});
    return shards.map((_, slot) => results.get(slot)?.sampleLoss ?? []);
  }

  async generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]> {
    for (;;) {
      const member = (await this.membership.someone(version))[0]!;
      try {
        return await member.generate(version, prompt, maxNewTokens);
      } catch (err) {
        if (member === this.membership.local) throw err;
        this.membership.lose(member as RemoteNode, errorMessage(err));
      }
    }
  }

  async close(reason = 'the run ended'): Promise<void> {
    const nodes = this.membership.release();
    await Promise.all(nodes.map((n) => n.shutdown(reason)));
    await this.opts.server?.close(reason);
    await this.pool.close();
  }
}
