import type { AdamWMoments, AdamWOptions } from '../math/adamw.js';
import type { Sample } from './protocol.js';

/** A worker as the coordinator reports it: this process's threads, or a remote node. */
export interface MemberInfo {
  id: number;
  kind: 'local' | 'node';
  /** Host name (nodes: as the node reports it, with its address). */
  host: string;
  threads: number;
  backend: string;
  /** What runs its optimizer and gradient sums: native or JavaScript kernels. */
  kernels: string;
}

/** What the coordinator asks of one optimizer step. */
export interface StepRequest {
  /** 0-based step; the gradient is computed with weight version `step`. */
  step: number;
  /** The global batch split into the group's slots (one shard per slot). */
  shards: Sample[][];
  dropout: { rate: number; seed: number };
  adam: AdamWOptions;
}

/** One member's share of a step. */
export interface MemberStep {
  member: number;
  slots: number[];
  /** Its slowest task's compute time, and the rest of that task's round trip (dispatch, network). */
  computeSec: number;
  waitSec: number;
  /** Bytes it sent to and received from the coordinator this step (0 for local threads). */
  sentBytes: number;
  receivedBytes: number;
  /** Nodes: seconds since the node was last heard from (a ping answered, data drained), at the step's end. */
  lastHeardSec?: number;
}

/** Where a step's time went, and what it moved. */
export interface StepTiming {
  stepSec: number;
  /** Slowest slot's compute time: the step's critical path; and each slot's. */
  computeSec: number;
  workerComputeSec: number[];
  /** Gradient-phase wall time not spent computing on the slowest slot (dispatch, network). */
  waitSec: number;
  /** Coordinator time spent adding partial sums (it overlaps compute and waiting). */
  reduceSec: number;
  optimizerSec: number;
  publishSec: number;
  /** Peak wasm heap of the workers (0 on other backends) and their live tensors after the step. */
  heapBytes: number;
  liveTensors: number;
  /** Bytes copied between buffers and sent over the network this step (see README). */
  bytesMoved: number;
  /** Each member's slots, compute, wait and the bytes it sent and received. */
  members: MemberStep[];
}

export interface StepReport extends StepTiming {
  /** Mean token loss of the global batch, before the update. */
  loss: number;
  tokens: number;
}

/** Joins, departures and reassignments, as they happen. */
export interface MemberEvent {
  /** `start`: the local threads as the run (re)starts; the others concern nodes. */
  event: 'start' | 'join' | 'leave' | 'lost' | 'reassign' | 'waiting' | 'diverged';
  /** The step under way (or the next one). */
  step: number;
  member: number;
  host: string;
  threads: number;
  /** The backend and kernels a joining node runs. */
  backend?: string;
  kernels?: string;
  slots?: number[];
  reason?: string;
}

/**
 * The coordinator's view of its workers, whatever connects them. The group owns the
 * authoritative weights and AdamW moments; a step computes every slot's gradient wherever the
 * group places it, reduces them in the canonical tree order and takes one AdamW step.
 */
export interface WorkerGroup {
  /** Slots a global batch is split into: fixed for the run, whatever the placement. */
  readonly slots: number;
  /** e.g. "2 worker threads", "2 nodes (4 threads)". */
  description(): string;
  members(): MemberInfo[];
  /** Loads the initial state, starts or waits for the workers; returns the backend they run. */
  start(state: { weights: Float32Array; moments?: AdamWMoments; version: number }): Promise<string>;
  /** The weights and moments after the last step (for checkpoints; do not modify). */
  readonly weights: Float32Array;
  readonly moments: AdamWMoments;
  trainStep(request: StepRequest): Promise<StepReport>;
  /** Summed token loss of every sample of each shard with weight version `version`, dropout off. */
  losses(version: number, shards: Sample[][], chunk: number): Promise<number[][]>;
  generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]>;
  /** Receives membership events. */
  onEvent(listener: (e: MemberEvent) => void): void;
  close(reason?: string): Promise<void>;
}

/** A worker failed in a way the run cannot recover from: names the worker and what it was doing. */
export class WorkerError extends Error {
  override readonly name = 'WorkerError';
  constructor(readonly who: string, readonly during: string, readonly reason: string) {
    super(`${who} failed during ${during}: ${reason}`);
  }
}
