/**
 * The one message protocol between the coordinator and its workers, whatever carries it
 * (worker threads today; WebSocket frames for remote nodes). Gradients and weights do not travel
 * in these messages: they live in buffers the transport owns (shared memory for threads).
 */
import type { AdamWOptions } from '../coordinator/adamw.js';
import type { BackendName } from '../model/backend.js';

/** One training or evaluation sample: its dataset id and its input and target tokens. */
export interface Sample {
  id: number;
  input: Int32Array;
  target: Int32Array;
}

export interface HelloTask {
  kind: 'hello';
}

export interface TrainTask {
  kind: 'train';
  /** The global optimizer step this gradient is for (it also keys the dropout masks). */
  step: number;
  /** Weight version the worker must compute with. */
  version: number;
  /** Which gradient buffer to write. */
  slot: number;
  samples: Sample[];
  dropout: { rate: number; seed: number };
}

export interface LossTask {
  kind: 'loss';
  version: number;
  samples: Sample[];
  /** Samples per forward pass (bounds activation memory). */
  chunk: number;
}

export interface GenerateTask {
  kind: 'generate';
  version: number;
  prompt: number[];
  maxNewTokens: number;
}

/** Sum the dense gradient of slots[1..] into slots[0] over [start, end) (shared memory only). */
export interface ReduceTask {
  kind: 'reduce';
  start: number;
  end: number;
  slots: number[];
}

/** One AdamW step over parameters [start, end) with the gradient in `slot` (shared memory only). */
export interface AdamWTask {
  kind: 'adamw';
  start: number;
  end: number;
  slot: number;
  /** 1-based optimizer step, for bias correction. */
  t: number;
  gradScale: number;
  options: AdamWOptions;
}

export type WorkerTask = HelloTask | TrainTask | LossTask | GenerateTask | ReduceTask | AdamWTask;

/** Fields every reply carries, for the coordinator's timing and memory reports. */
export interface ReplyStats {
  /** Wall time the worker spent on the task. */
  computeMs: number;
  /** Peak wasm heap (0 on other backends) and live tensors after the task. */
  heapBytes: number;
  numTensors: number;
}

export interface HelloReply extends ReplyStats {
  kind: 'hello';
  backend: BackendName;
  threadId: number;
}

export interface TrainReply extends ReplyStats {
  kind: 'train';
  sampleLoss: number[];
  tokens: number;
  touchedRows: number[];
  phases: Record<string, number>;
}

export interface LossReply extends ReplyStats {
  kind: 'loss';
  sampleLoss: number[];
  tokens: number;
}

export interface GenerateReply extends ReplyStats {
  kind: 'generate';
  tokens: number[];
}

export interface ReduceReply extends ReplyStats {
  kind: 'reduce';
}

export interface AdamWReply extends ReplyStats {
  kind: 'adamw';
}

export type WorkerReply = HelloReply | TrainReply | LossReply | GenerateReply | ReduceReply | AdamWReply;
export type ReplyFor<T extends WorkerTask> = Extract<WorkerReply, { kind: T['kind'] }>;

/** A reply before the common stats are attached (distributes over the union). */
export type ReplyBody<R extends WorkerReply = WorkerReply> = R extends unknown ? Omit<R, keyof ReplyStats> : never;
