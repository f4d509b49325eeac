import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { AdamWMoments, AdamWOptions } from '../math/adamw.js';
import { gradientPieces, type Piece } from '../math/pieces.js';
import { addInto, addRows, clearRows, putRows, takeRows, type SparseRows } from '../math/reduce.js';
import { shardRange } from '../math/shard.js';
import { maximalSubtrees, treeSum, type TreeNode } from '../math/tree.js';
import type { BackendChoice, BackendName } from '../model/backend.js';
import { resolveKernels, type KernelChoice } from '../model/provider.js';
import { gradientRegions, type ParamLayout } from '../model/layout.js';
import { errorMessage } from '../util/errors.js';
import { WorkerError } from './group.js';
import type { Partial, Sample, SlotStats } from './protocol.js';
import type { ReplyFor, ThreadReply, ThreadSetup, ThreadTask } from './thread-protocol.js';

const THREAD_ENTRY = fileURLToPath(new URL('../worker/thread.js', import.meta.url));

/** Samples of one slot of a step (or of an evaluation). */
export interface SlotWork {
  slot: number;
  samples: Sample[];
}

export interface PoolOptions {
  threads: number;
  layout: ParamLayout;
  backend: BackendChoice;
  kernels: KernelChoice;
  /** False: optimizer-only threads, which never load a model (a coordinator without local workers). */
  withModel: boolean;
  /** Floats per piece of streamed gradient. */
  pieceFloats: number;
  /** Test hook (see worker/thread.ts). */
  fault?: string | null;
}

export interface TrainWork {
  step: number;
  slots: SlotWork[];
  /** Slots in the whole step: the reduction tree's leaves. */
  slotCount: number;
  dropout: { rate: number; seed: number };
}

/** What a pool's threads run: their tfjs backend and matmul kernels. */
export interface PoolStarted {
  backend: BackendName;
  kernels: string;
}

/**
 * Threads on this machine (piscina), each with its own tfjs replica, sharing the weights, AdamW
 * moments and the reduced gradient through SharedArrayBuffers. Used by the coordinator for its
 * local workers and its optimizer, and by every remote node for its threads.
 *
 * A training call computes one gradient per slot into a per-slot shared buffer; as the backward
 * completes a region on every slot of a reduction subtree, the main thread adds that region in
 * tree order and hands the subtree's partial sums piece by piece to a sink, so they can be sent or
 * reduced while later blocks still compute. Buffers stay valid until the step's applyStep.
 */
export class ThreadPool {
  readonly weights: Float32Array;
  readonly moments: AdamWMoments;
  readonly reduced: Float32Array;
  readonly threads: number;
  readonly pieces: Piece[];
  readonly pieceFloats: number;
  private readonly regions: Array<[number, number]>;
  private readonly versionCell: Int32Array;
  private readonly pool: Piscina<ThreadTask, ThreadReply>;
  private readonly free: Float32Array[] = [];
  private readonly inUse: Float32Array[] = [];
  private closed = false;

  constructor(private readonly opts: PoolOptions) {
    const { threads, layout } = opts;
    this.threads = threads;
    this.pieceFloats = opts.pieceFloats;
    this.regions = gradientRegions(layout);
    this.pieces = gradientPieces(this.regions, opts.pieceFloats);
    // Refuses a provider that cannot run before any thread exists, and loads the system BLAS on
    // this thread: it reads its environment as it loads.
    if (opts.withModel) resolveKernels(opts.kernels);
    const bytes = layout.totalSize * Float32Array.BYTES_PER_ELEMENT;
    const setup: ThreadSetup = {
      model: opts.withModel ? layout.config : null, backend: opts.backend, kernels: opts.kernels, fault: opts.fault ?? null,
      weights: new SharedArrayBuffer(bytes),
      version: new SharedArrayBuffer(4),
      adamM: new SharedArrayBuffer(bytes),
      adamV: new SharedArrayBuffer(bytes),
      reduced: new SharedArrayBuffer(bytes),
    };
    this.weights = new Float32Array(setup.weights);
    this.moments = { m: new Float32Array(setup.adamM), v: new Float32Array(setup.adamV) };
    this.reduced = new Float32Array(setup.reduced);
    this.versionCell = new Int32Array(setup.version);
    this.pool = new Piscina({
      filename: THREAD_ENTRY, minThreads: threads, maxThreads: threads, concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER, workerData: setup,
    });
  }

  get version(): number {
    return Atomics.load(this.versionCell, 0);
  }

  /** Starts every thread's replica; returns the backend and kernels they run. */
  async start(): Promise<PoolStarted> {
    const hellos = await Promise.all(Array.from({ length: this.threads }, (_, k) => this.run({ kind: 'hello' }, `thread ${k}`, 'start-up')));
    return { backend: hellos[0]!.backend, kernels: hellos[0]!.kernels };
  }

  publish(version: number): void {
    Atomics.store(this.versionCell, 0, version);
  }

  private async run<T extends ThreadTask>(task: T, who: string, during: string): Promise<ReplyFor<T>> {
    let reply: ThreadReply;
    try {
      reply = await this.pool.run(task);
    } catch (err) {
      throw new WorkerError(who, during, errorMessage(err));
    }
    if (reply.kind !== task.kind) throw new WorkerError(who, during, `expected a "${task.kind}" reply, got "${reply.kind}"`);
    return reply as ReplyFor<T>;
  }

  private takeBuffer(): Float32Array {
    const b = this.free.pop() ?? new Float32Array(new SharedArrayBuffer(this.weights.byteLength));
    this.inUse.push(b);
    return b;
  }

  /** Returns the gradient buffers of finished steps for reuse (their partials are no longer read). */
  private release(): void {
    this.free.push(...this.inUse.splice(0));
  }

  /** Computes the gradients of `work.slots`, streaming each subtree's partial sums to `sink`. */
  async train(work: TrainWork, sink: (p: Partial) => void): Promise<SlotStats[]> {
    const n = work.slots.length;
    const progress = new Int32Array(new SharedArrayBuffer(4 * (n + 1)));
    const grads = new Map(work.slots.map((w) => [w.slot, this.takeBuffer()]));
    const index = new Map(work.slots.map((w, i) => [w.slot, i + 1]));
    let failed: unknown = null;
    const tasks = work.slots.map((w, i) => this.run({
      kind: 'train', step: work.step, version: work.step, slot: w.slot, samples: w.samples, dropout: work.dropout,
      gradient: grads.get(w.slot)!.buffer as SharedArrayBuffer, progress: progress.buffer as SharedArrayBuffer, progressIndex: i + 1,
    }, `worker ${w.slot}`, `step ${work.step}`).catch((err: unknown) => {
      failed ??= err;
      Atomics.add(progress, 0, 1);
      Atomics.notify(progress, 0);
      throw err;
    }));
    tasks.forEach((t) => t.catch(() => {}));

    const subtrees = maximalSubtrees(index.keys(), work.slotCount);
    const regions = this.regions.length;
    const sent = subtrees.map(() => 0);
    const ready = ([lo, hi]: TreeNode, region: number) => {
      for (let s = lo; s < hi; s++) if (Atomics.load(progress, index.get(s)!) <= region) return false;
      return true;
    };
    while (sent.some((r) => r < regions)) {
      const seen = Atomics.load(progress, 0);
      if (failed) throw failed;
      subtrees.forEach((node, k) => {
        while (sent[k]! < regions && ready(node, sent[k]!)) {
          const region = sent[k]!++;
          const target = this.sumRegion(grads, node, region);
          for (const piece of this.pieces) {
            if (piece.region === region) sink({ kind: 'dense', node, piece: piece.index, data: target.subarray(piece.start, piece.end) });
          }
        }
      });
      if (sent.some((r) => r < regions)) await Atomics.waitAsync(progress, 0, seen).value;
    }
    const replies = await Promise.all(tasks);
    const { tokEmb, config } = this.opts.layout;
    const rows = new Map(work.slots.map((w, i) =>
      [w.slot, takeRows(grads.get(w.slot)!.subarray(tokEmb.offset, tokEmb.offset + tokEmb.size), replies[i]!.touchedRows, config.embDim)]));
    const addWide = (a: SparseRows, b: SparseRows) => addRows(a, b, config.embDim);
    for (const node of subtrees) sink({ kind: 'rows', node, rows: treeSum(node, ([lo, hi]) => (hi - lo === 1 ? rows.get(lo)! : undefined), addWide) });
    return replies.map((r, i) => ({
      slot: work.slots[i]!.slot, sampleLoss: r.sampleLoss, tokens: r.tokens, computeMs: r.computeMs, heapBytes: r.heapBytes, numTensors: r.numTensors,
    }));
  }

  /** Adds one region of the subtree's slot gradients in tree order, into the first slot's buffer. */
  private sumRegion(grads: Map<number, Float32Array>, node: TreeNode, region: number): Float32Array {
    const [first, last] = this.regions[region]!;
    treeSum(node, ([lo, hi]) => (hi - lo === 1 ? grads.get(lo)!.subarray(first, last) : undefined), addInto);
    return grads.get(node[0])!;
  }

  /** Summed token loss of every sample of each slot, dropout off. */
  async losses(version: number, work: SlotWork[], chunk: number): Promise<Array<{ slot: number; sampleLoss: number[]; computeMs: number }>> {
    return Promise.all(work.map(async (w) => {
      const r = await this.run({ kind: 'loss', version, samples: w.samples, chunk }, `worker ${w.slot}`, `evaluation (weights v${version})`);
      return { slot: w.slot, sampleLoss: r.sampleLoss, computeMs: r.computeMs };
    }));
  }

  async generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]> {
    return (await this.run({ kind: 'generate', version, prompt, maxNewTokens }, 'worker 0', 'generation')).tokens;
  }

  /**
   * Step `step`'s update, the same arithmetic on the coordinator and on every node: the step's
   * summed token-embedding rows go into `reduced` (its other rows stay zero), one AdamW step of
   * `weights` and `moments` sharded over the threads, then the rows are cleared again and the
   * step's gradient buffers released.
   */
  async applyStep(step: number, gradScale: number, options: AdamWOptions, rows: SparseRows): Promise<void> {
    const { tokEmb, config } = this.opts.layout;
    const tok = this.reduced.subarray(tokEmb.offset, tokEmb.offset + tokEmb.size);
    putRows(tok, rows, config.embDim);
    const t = step + 1;
    await Promise.all(shardRange(0, this.weights.length, this.threads).map(([start, end], k) =>
      this.run({ kind: 'adamw', start, end, t, gradScale, options }, `thread ${k}`, `optimizer step ${t}`)));
    clearRows(tok, rows.rows, config.embDim);
    this.release();
  }

  /** SHA-256 of the weights (hex). */
  async hash(): Promise<string> {
    return (await this.run({ kind: 'hash' }, 'thread 0', 'weight checksum')).hash;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.destroy();
  }
}
