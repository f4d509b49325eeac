/**
 * Checks every control message against its type in protocol.ts before anything reads it: a
 * message from the network is data of unknown shape until it passes here.
 */
import { BACKENDS } from '../model/backend.js';
import { parseRunConfig, type ModelConfig } from '../model/config.js';
import { errorMessage } from '../util/errors.js';
import { ProtocolError } from './frames.js';
import type { CoordinatorMessage, NodeMessage, Sample, SlotSamples, SlotStats } from './protocol.js';

type Obj = Record<string, unknown>;
const U32 = 2 ** 32 - 1;
/** Bounds that keep a message's size sane; far above any legal use. */
const MAX_LIST = 1 << 16;

function fail(what: string): never {
  throw new ProtocolError(what);
}

function obj(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) fail(`${what} must be an object`);
  return v as Obj;
}

function int(v: unknown, what: string, min = 0, max = U32): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(`${what} must be an integer in [${min}, ${max}]`);
  return v;
}

function finite(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${what} must be a finite number`);
  return v;
}

function text(v: unknown, what: string, max = 1024): string {
  if (typeof v !== 'string' || v.length > max) fail(`${what} must be a string of at most ${max} characters`);
  return v;
}

function bytes(v: unknown, what: string, length: number): Uint8Array {
  if (!(v instanceof Uint8Array) || v.length !== length) fail(`${what} must be ${length} bytes`);
  return v;
}

function list<T>(v: unknown, what: string, item: (x: unknown, what: string) => T, max = MAX_LIST): T[] {
  if (!Array.isArray(v) || v.length > max) fail(`${what} must be a list of at most ${max} items`);
  return v.map((x, i) => item(x, `${what}[${i}]`));
}

function oneOf<T extends string>(v: unknown, what: string, options: readonly T[]): T {
  if (!options.includes(v as T)) fail(`${what} must be one of ${options.join(', ')}`);
  return v as T;
}

const uint = (v: unknown, what: string) => int(v, what);
/** A loss may be NaN or infinite (a diverged model has one); the gradient frames are what must be finite. */
const loss = (v: unknown, what: string): number => {
  if (typeof v !== 'number') fail(`${what} must be a number`);
  return v;
};

/** Token ids travel as the raw little-endian bytes of an Int32Array (msgpack bin). */
function tokens(v: unknown, what: string): Int32Array {
  if (!(v instanceof Uint8Array) || v.length % 4 !== 0 || v.length > 4 * MAX_LIST) fail(`${what} must be int32 token ids`);
  const out = new Int32Array(v.length / 4);
  new Uint8Array(out.buffer).set(v);
  for (const t of out) if (t < 0) fail(`${what} holds a negative token id`);
  return out;
}

function sample(v: unknown, what: string): Sample {
  const o = obj(v, what);
  return { id: uint(o.id, `${what}.id`), input: tokens(o.input, `${what}.input`), target: tokens(o.target, `${what}.target`) };
}

function slotSamples(v: unknown, what: string): SlotSamples {
  const o = obj(v, what);
  return { slot: uint(o.slot, `${what}.slot`), samples: list(o.samples, `${what}.samples`, sample, 4096) };
}

function slotStats(v: unknown, what: string): SlotStats {
  const o = obj(v, what);
  return {
    slot: uint(o.slot, `${what}.slot`), sampleLoss: list(o.sampleLoss, `${what}.sampleLoss`, loss, 4096),
    tokens: uint(o.tokens, `${what}.tokens`), computeMs: finite(o.computeMs, `${what}.computeMs`), heapBytes: finite(o.heapBytes, `${what}.heapBytes`),
    numTensors: uint(o.numTensors, `${what}.numTensors`),
  };
}

function model(v: unknown, what: string): ModelConfig {
  try {
    // A full run config's training section is not sent; validate the model part with placeholders.
    return parseRunConfig({ model: v, training: PLACEHOLDER_TRAINING }, what).model;
  } catch (err) {
    fail(errorMessage(err));
  }
}

const PLACEHOLDER_TRAINING = {
  batchSize: 1, epochs: 1, lr: 1, weightDecay: 0, evalFreq: 1, evalIter: 1, seed: 0, trainRatio: 0.5, startContext: 'x', sampleTokens: 0,
};

export function parseNodeMessage(raw: unknown): NodeMessage {
  const m = obj(raw, 'message');
  switch (m.kind) {
    case 'hello':
      return {
        kind: 'hello', protocol: uint(m.protocol, 'protocol'), nonce: bytes(m.nonce, 'nonce', 32), proof: bytes(m.proof, 'proof', 32),
        host: text(m.host, 'host', 255), threads: int(m.threads, 'threads', 1, 4096), backend: oneOf(m.backend, 'backend', BACKENDS),
      };
    case 'ready':
      return { kind: 'ready', version: uint(m.version, 'version'), backend: text(m.backend, 'backend', 64), kernels: text(m.kernels, 'kernels', 200) };
    case 'trained':
      return { kind: 'trained', task: uint(m.task, 'task'), results: list(m.results, 'results', slotStats, 4096) };
    case 'losses':
      return {
        kind: 'losses', task: uint(m.task, 'task'),
        results: list(m.results, 'results', (v, w) => {
          const o = obj(v, w);
          return { slot: uint(o.slot, `${w}.slot`), sampleLoss: list(o.sampleLoss, `${w}.sampleLoss`, loss, 4096), computeMs: finite(o.computeMs, `${w}.computeMs`) };
        }, 4096),
      };
    case 'generated':
      return { kind: 'generated', task: uint(m.task, 'task'), tokens: list(m.tokens, 'tokens', uint) };
    case 'checksum-reply':
      return { kind: 'checksum-reply', version: uint(m.version, 'version'), hash: text(m.hash, 'hash', 128) };
    case 'failed':
      return { kind: 'failed', task: uint(m.task, 'task'), reason: text(m.reason, 'reason') };
    case 'leave':
      return { kind: 'leave', reason: text(m.reason, 'reason') };
    default:
      fail(`unknown message kind ${JSON.stringify(String(m.kind)).slice(0, 40)}`);
  }
}

export function parseCoordinatorMessage(raw: unknown): CoordinatorMessage {
  const m = obj(raw, 'message');
  switch (m.kind) {
    case 'challenge':
      return { kind: 'challenge', protocol: uint(m.protocol, 'protocol'), nonce: bytes(m.nonce, 'nonce', 32) };
    case 'welcome':
      return {
        kind: 'welcome', proof: bytes(m.proof, 'proof', 32), member: uint(m.member, 'member'), model: model(m.model, 'model'),
        wire: oneOf(m.wire, 'wire', ['fp32', 'bf16'] as const),
        pieceFloats: int(m.pieceFloats, 'pieceFloats', 1, 1 << 24),
      };
    case 'refused':
      return { kind: 'refused', reason: text(m.reason, 'reason') };
    case 'state':
    case 'state-end':
      return { kind: m.kind, version: uint(m.version, 'version') };
    case 'train': {
      const d = obj(m.dropout, 'dropout');
      return {
        kind: 'train', task: uint(m.task, 'task'), step: uint(m.step, 'step'), slotCount: int(m.slotCount, 'slotCount', 1, 4096),
        slots: list(m.slots, 'slots', slotSamples, 4096),
        dropout: { rate: finite(d.rate, 'dropout.rate'), seed: uint(d.seed, 'dropout.seed') },
      };
    }
    case 'loss':
      return {
        kind: 'loss', task: uint(m.task, 'task'), version: uint(m.version, 'version'), slots: list(m.slots, 'slots', slotSamples, 4096),
        chunk: int(m.chunk, 'chunk', 1, 4096),
      };
    case 'generate':
      return {
        kind: 'generate', task: uint(m.task, 'task'), version: uint(m.version, 'version'), prompt: list(m.prompt, 'prompt', uint),
        maxNewTokens: int(m.maxNewTokens, 'maxNewTokens', 0, 1 << 20),
      };
    case 'commit': {
      const a = obj(m.adam, 'adam');
      return {
        kind: 'commit', step: uint(m.step, 'step'), gradScale: finite(m.gradScale, 'gradScale'),
        adam: {
          lr: finite(a.lr, 'adam.lr'), weightDecay: finite(a.weightDecay, 'adam.weightDecay'), beta1: finite(a.beta1, 'adam.beta1'),
          beta2: finite(a.beta2, 'adam.beta2'), eps: finite(a.eps, 'adam.eps'),
        },
      };
    }
    case 'checksum':
      return { kind: 'checksum', version: uint(m.version, 'version'), hash: text(m.hash, 'hash', 128) };
    case 'shutdown':
      return { kind: 'shutdown', reason: text(m.reason, 'reason') };
    default:
      fail(`unknown message kind ${JSON.stringify(String(m.kind)).slice(0, 40)}`);
  }
}

/** Samples fit the model: `contextLength`-or-shorter inputs and targets of equal length, ids in the vocabulary. */
export function checkSamples(slots: SlotSamples[], config: ModelConfig): void {
  for (const { samples } of slots) {
    for (const s of samples) {
      const n = s.input.length;
      if (n === 0 || n > config.contextLength || s.target.length !== n) fail(`a sample has ${n} input and ${s.target.length} target tokens`);
      for (const t of [...s.input, ...s.target]) if (t >= config.vocabSize) fail(`token id ${t} is outside the vocabulary`);
    }
  }
}
