/**
 * The message protocol between the coordinator and its workers. Payload types shared by every
 * transport come first; then the control messages a coordinator and a remote node exchange over
 * WebSocket (msgpack); tensors travel in binary frames (see frames.ts). Thread-only messages,
 * which name shared memory, are in thread-protocol.ts.
 */
import type { AdamWOptions } from '../math/adamw.js';
import type { SparseRows } from '../math/reduce.js';
import type { TreeNode } from '../math/tree.js';
import type { BackendChoice } from '../model/backend.js';
import type { ModelConfig } from '../model/config.js';

/**
 * One training or evaluation sample: its dataset id and its input and target tokens (on the
 * wire: the tokens' little-endian int32 bytes).
 */
export interface Sample {
  id: number;
  input: Int32Array;
  target: Int32Array;
}

/** A partial sum of a step's gradient over the slots of one reduction-tree node. */
export type Partial =
  | { kind: 'dense'; node: TreeNode; piece: number; data: Float32Array }
  | { kind: 'rows'; node: TreeNode; rows: SparseRows };

/** Bumped whenever a message or frame changes meaning; both sides must agree. */
export const PROTOCOL_VERSION = 3;

export type WireFormat = 'fp32' | 'bf16';

export interface SlotSamples {
  slot: number;
  samples: Sample[];
}

// Coordinator -> node.

export interface ChallengeMessage {
  kind: 'challenge';
  protocol: number;
  nonce: Uint8Array;
}

export interface WelcomeMessage {
  kind: 'welcome';
  /** HMAC of the node's nonce: proves the coordinator holds the token too. */
  proof: Uint8Array;
  member: number;
  model: ModelConfig;
  wire: WireFormat;
  pieceFloats: number;
}

export interface RefusedMessage {
  kind: 'refused';
  reason: string;
}

/** Weights and moments of `version` follow in state frames, then `stateEnd`. */
export interface StateMessage {
  kind: 'state';
  version: number;
}

export interface StateEndMessage {
  kind: 'state-end';
  version: number;
}

export interface TrainMessage {
  kind: 'train';
  task: number;
  step: number;
  /** Slots in the whole step: the reduction tree's leaves. */
  slotCount: number;
  slots: SlotSamples[];
  dropout: { rate: number; seed: number };
}

export interface LossMessage {
  kind: 'loss';
  task: number;
  version: number;
  slots: SlotSamples[];
  chunk: number;
}

export interface GenerateMessage {
  kind: 'generate';
  task: number;
  version: number;
  prompt: number[];
  maxNewTokens: number;
}

/** Every reduced piece of `step` has been sent: apply AdamW step `t` (mirroring the coordinator). */
export interface CommitMessage {
  kind: 'commit';
  step: number;
  gradScale: number;
  adam: AdamWOptions;
}

/** The coordinator's weights after `version` steps hash to `hash`: compare yours. */
export interface ChecksumMessage {
  kind: 'checksum';
  version: number;
  hash: string;
}

export interface ShutdownMessage {
  kind: 'shutdown';
  reason: string;
}

export type CoordinatorMessage =
  | ChallengeMessage | WelcomeMessage | RefusedMessage | StateMessage | StateEndMessage | TrainMessage | LossMessage
  | GenerateMessage | CommitMessage | ChecksumMessage | ShutdownMessage;

// Node -> coordinator.

export interface HelloMessage {
  kind: 'hello';
  protocol: number;
  nonce: Uint8Array;
  /** HMAC of the coordinator's and this node's nonces. */
  proof: Uint8Array;
  host: string;
  threads: number;
  backend: BackendChoice;
}

export interface ReadyMessage {
  kind: 'ready';
  version: number;
  backend: string;
  /** What runs the optimizer and gradient sums there (native or JavaScript). */
  kernels: string;
}

/** What a worker reports of one slot's gradient. */
export interface SlotStats {
  slot: number;
  sampleLoss: number[];
  tokens: number;
  computeMs: number;
  heapBytes: number;
  numTensors: number;
}

export interface TrainedMessage {
  kind: 'trained';
  task: number;
  results: SlotStats[];
}

export interface LossesMessage {
  kind: 'losses';
  task: number;
  results: Array<{ slot: number; sampleLoss: number[]; computeMs: number }>;
}

export interface GeneratedMessage {
  kind: 'generated';
  task: number;
  tokens: number[];
}

/** The node's weights after `version` steps hash to `hash`. */
export interface ChecksumReplyMessage {
  kind: 'checksum-reply';
  version: number;
  hash: string;
}

/** The node could not do a task (it will not retry). */
export interface FailedMessage {
  kind: 'failed';
  task: number;
  reason: string;
}

export interface LeaveMessage {
  kind: 'leave';
  reason: string;
}

export type NodeMessage =
  | HelloMessage | ReadyMessage | TrainedMessage | LossesMessage | GeneratedMessage | ChecksumReplyMessage | FailedMessage | LeaveMessage;
