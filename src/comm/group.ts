import type { AdamWMoments, AdamWOptions } from '../coordinator/adamw.js';
import type { ReplyFor, WorkerTask } from './protocol.js';

/**
 * The coordinator's view of its workers, whatever transport connects them. The coordinator
 * updates `weights` in place, calls publish(), then runs tasks; each worker writes its gradient
 * sum into its slot, which the coordinator reduces.
 */
export interface WorkerGroup {
  readonly size: number;
  /** e.g. "2 worker threads". */
  readonly description: string;
  readonly weights: Float32Array;
  gradient(slot: number): Float32Array;
  publish(version: number): Promise<void>;
  run<T extends WorkerTask>(slot: number, task: T): Promise<ReplyFor<T>>;
  /** AdamW moments in the flat layout. */
  readonly moments: AdamWMoments;
  /** Sums the gradients of slots[1..] into slots[0] over [start, end). */
  reduce(slots: number[], start: number, end: number): Promise<void>;
  /** One AdamW step on `weights` and `moments` with the gradient in `slot`. */
  adamw(slot: number, t: number, gradScale: number, options: AdamWOptions): Promise<void>;
  close(): Promise<void>;
}

/** A worker failed: names the worker and what it was doing. */
export class WorkerError extends Error {
  override readonly name = 'WorkerError';
  constructor(readonly slot: number, readonly during: string, readonly reason: string) {
    super(`worker ${slot} failed during ${during}: ${reason}`);
  }
}

export function expectReply<T extends WorkerTask>(task: T, reply: { kind: string }): ReplyFor<T> {
  if (reply.kind !== task.kind) throw new Error(`expected a "${task.kind}" reply, got "${reply.kind}"`);
  return reply as ReplyFor<T>;
}
