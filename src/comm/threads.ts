import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { AdamWMoments, AdamWOptions } from '../coordinator/adamw.js';
import { shardRange } from '../coordinator/shard.js';
import type { BackendChoice } from '../model/backend.js';
import type { ModelConfig } from '../model/config.js';
import { errorMessage } from '../util/errors.js';
import { WorkerError, expectReply, type WorkerGroup } from './group.js';
import type { ReplyFor, WorkerReply, WorkerTask } from './protocol.js';

/** What each worker thread receives once (shared buffers are shared, not copied). */
export interface ThreadSetup {
  model: ModelConfig;
  backend: BackendChoice;
  weights: SharedArrayBuffer;
  version: SharedArrayBuffer;
  gradients: SharedArrayBuffer[];
  adamM: SharedArrayBuffer;
  adamV: SharedArrayBuffer;
  /** Test hook: make a worker fail on purpose (see worker/thread.ts). */
  fault: string | null;
}

const THREAD_ENTRY = fileURLToPath(new URL('../worker/thread.js', import.meta.url));

/**
 * Worker threads on this machine via piscina. Weights live in one SharedArrayBuffer that every
 * thread reads; each slot's gradient lives in its own SharedArrayBuffer; nothing large is
 * serialised. Piscina threads are interchangeable: a task names the slot it writes. The
 * reduction and the AdamW step run sharded across the same threads, on shared memory.
 */
export class ThreadGroup implements WorkerGroup {
  readonly weights: Float32Array;
  readonly moments: AdamWMoments;
  private readonly versionCell: Int32Array;
  private readonly gradients: Float32Array[];
  private readonly pool: Piscina<WorkerTask, WorkerReply>;
  private closed = false;

  constructor(readonly size: number, model: ModelConfig, paramCount: number, backend: BackendChoice, fault: string | null = null) {
    const bytes = paramCount * Float32Array.BYTES_PER_ELEMENT;
    const setup: ThreadSetup = {
      model, backend, fault,
      weights: new SharedArrayBuffer(bytes),
      version: new SharedArrayBuffer(4),
      gradients: Array.from({ length: size }, () => new SharedArrayBuffer(bytes)),
      adamM: new SharedArrayBuffer(bytes),
      adamV: new SharedArrayBuffer(bytes),
    };
    this.moments = { m: new Float32Array(setup.adamM), v: new Float32Array(setup.adamV) };
    this.weights = new Float32Array(setup.weights);
    this.versionCell = new Int32Array(setup.version);
    this.gradients = setup.gradients.map((b) => new Float32Array(b));
    this.pool = new Piscina({
      filename: THREAD_ENTRY,
      minThreads: size,
      maxThreads: size,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      workerData: setup,
    });
  }

  get description(): string {
    return `${this.size} worker thread${this.size === 1 ? '' : 's'}`;
  }

  gradient(slot: number): Float32Array {
    return this.gradients[slot]!;
  }

  async publish(version: number): Promise<void> {
    Atomics.store(this.versionCell, 0, version);
  }

  async run<T extends WorkerTask>(slot: number, task: T): Promise<ReplyFor<T>> {
    try {
      return expectReply(task, await this.pool.run(task));
    } catch (err) {
      throw new WorkerError(slot, describe(task), errorMessage(err));
    }
  }

  async reduce(slots: number[], start: number, end: number): Promise<void> {
    await Promise.all(shardRange(start, end, this.size).map(([s, e], k) =>
      this.run(k, { kind: 'reduce', start: s, end: e, slots })));
  }

  async adamw(slot: number, t: number, gradScale: number, options: AdamWOptions): Promise<void> {
    await Promise.all(shardRange(0, this.weights.length, this.size).map(([s, e], k) =>
      this.run(k, { kind: 'adamw', start: s, end: e, slot, t, gradScale, options })));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.destroy();
  }
}

function describe(task: WorkerTask): string {
  switch (task.kind) {
    case 'train':
      return `step ${task.step}`;
    case 'loss':
      return `evaluation (weights v${task.version})`;
    case 'generate':
      return 'generation';
    case 'hello':
      return 'start-up';
    case 'reduce':
      return 'gradient reduction';
    case 'adamw':
      return `optimizer step ${task.t}`;
  }
}
