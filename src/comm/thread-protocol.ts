/**
 * Messages between a ThreadPool and its threads. They make sense only over shared memory: the
 * weights, moments and gradients they name live in SharedArrayBuffers every thread maps.
 */
import type { AdamWOptions } from '../math/adamw.js';
import type { BackendChoice, BackendName } from '../model/backend.js';
import type { ModelConfig } from '../model/config.js';
import type { KernelChoice } from '../model/provider.js';
import type { Sample } from './protocol.js';

/** What every thread receives once. */
export interface ThreadSetup {
  /** Null: optimizer-only threads, which never load tfjs. */
  model: ModelConfig | null;
  backend: BackendChoice;
  kernels: KernelChoice;
  weights: SharedArrayBuffer;
  /** Int32 cell: the version of the weights in `weights`. */
  version: SharedArrayBuffer;
  adamM: SharedArrayBuffer;
  adamV: SharedArrayBuffer;
  /** The reduced gradient the AdamW step reads. */
  reduced: SharedArrayBuffer;
  /** Test hook: make a thread fail on purpose (see worker/thread.ts). */
  fault: string | null;
}

export interface HelloTask {
  kind: 'hello';
}

/** The gradient of one slot's summed token losses, into `gradient` (a whole flat layout). */
export interface TrainTask {
  kind: 'train';
  step: number;
  version: number;
  slot: number;
  samples: Sample[];
  dropout: { rate: number; seed: number };
  gradient: SharedArrayBuffer;
  /** Int32 cells: [0] counts completed regions of every task, [progressIndex] those of this one. */
  progress: SharedArrayBuffer;
  progressIndex: number;
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

/** One AdamW step over parameters [start, end) with the gradient in `reduced`. */
export interface AdamWTask {
  kind: 'adamw';
  start: number;
  end: number;
  /** 1-based optimizer step, for bias correction. */
  t: number;
  gradScale: number;
  options: AdamWOptions;
}

/** SHA-256 of the weights: proves that mirrored weights are identical. */
export interface HashTask {
  kind: 'hash';
}

export type ThreadTask = HelloTask | TrainTask | LossTask | GenerateTask | AdamWTask | HashTask;

/** Fields every reply carries, for timing and memory reports. */
export interface ReplyStats {
  computeMs: number;
  /** Peak wasm heap (0 on other backends) and live tensors after the task. */
  heapBytes: number;
  numTensors: number;
}

export interface HelloReply extends ReplyStats {
  kind: 'hello';
  backend: BackendName;
  /** What runs the products and the optimizer (for the start line). */
  kernels: string;
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
}

export interface GenerateReply extends ReplyStats {
  kind: 'generate';
  tokens: number[];
}

export interface AdamWReply extends ReplyStats {
  kind: 'adamw';
}

export interface HashReply extends ReplyStats {
  kind: 'hash';
  hash: string;
}

export type ThreadReply = HelloReply | TrainReply | LossReply | GenerateReply | AdamWReply | HashReply;
export type ReplyFor<T extends ThreadTask> = Extract<ThreadReply, { kind: T['kind'] }>;

/** A reply before the common stats are attached (distributes over the union). */
export type ReplyBody<R extends ThreadReply = ThreadReply> = R extends unknown ? Omit<R, keyof ReplyStats> : never;
