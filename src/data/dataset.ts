import { createHash } from 'node:crypto';
import { permutation } from '../util/rng.js';
import { encode } from './tokenizer.js';

/**
 * Token windows of one split, as in the reference GPTDatasetV1: window i starts at
 * i * stride, its input is tokens[s, s + len) and its target tokens[s + 1, s + len + 1).
 */
export class WindowDataset {
  readonly starts: number[];

  constructor(readonly tokens: Int32Array, readonly length: number, stride = length) {
    this.starts = [];
    for (let s = 0; s < tokens.length - length; s += stride) this.starts.push(s);
  }

  get size(): number {
    return this.starts.length;
  }

  input(index: number): Int32Array {
    const s = this.starts[index]!;
    return this.tokens.subarray(s, s + this.length);
  }

  target(index: number): Int32Array {
    const s = this.starts[index]!;
    return this.tokens.subarray(s + 1, s + this.length + 1);
  }
}

export interface SplitData {
  characters: number;
  trainTokens: Int32Array;
  valTokens: Int32Array;
  train: WindowDataset;
  val: WindowDataset;
}

/** Splits the text by characters at floor(ratio * length), then tokenises each part. */
export function splitText(text: string, trainRatio: number, contextLength: number): SplitData {
  const cut = Math.floor(trainRatio * text.length);
  const trainTokens = Int32Array.from(encode(text.slice(0, cut)));
  const valTokens = Int32Array.from(encode(text.slice(cut)));
  return {
    characters: text.length,
    trainTokens,
    valTokens,
    train: new WindowDataset(trainTokens, contextLength),
    val: new WindowDataset(valTokens, contextLength),
  };
}

/**
 * SHA-256 of the token ids of both splits (with their lengths): what a run was trained on. Texts of
 * the same length, or a different split, give another fingerprint.
 */
export function dataFingerprint(data: Pick<SplitData, 'trainTokens' | 'valTokens'>): string {
  const hash = createHash('sha256');
  for (const tokens of [data.trainTokens, data.valTokens]) {
    hash.update(`${tokens.length}:`);
    hash.update(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
  }
  return hash.digest('hex');
}

/** Window indices of each batch: drop-last for training, keep-last for evaluation. */
export function batchIndices(order: number[], batchSize: number, dropLast: boolean): number[][] {
  const batches: number[][] = [];
  for (let i = 0; i < order.length; i += batchSize) {
    const batch = order.slice(i, i + batchSize);
    if (batch.length < batchSize && dropLast) break;
    batches.push(batch);
  }
  return batches;
}

/** Stream ids keep the run's random draws apart: one for each epoch's order, one per evaluation. */
const EPOCH_STREAM = 1;
const EVAL_STREAM = 2;

/** The shuffled training batches of an epoch (0-based), the same for any number of workers. */
export function epochBatches(size: number, batchSize: number, seed: number, epoch: number): number[][] {
  return batchIndices(permutation(size, seed, EPOCH_STREAM * 1_000_000 + epoch), batchSize, true);
}

/**
 * The training batches an evaluation averages over. The reference iterates a freshly shuffled
 * loader each time; we draw that shuffle from the seed and the evaluation's step.
 */
export function evalTrainBatches(size: number, batchSize: number, seed: number, step: number, count: number): number[][] {
  return batchIndices(permutation(size, seed, EVAL_STREAM * 1_000_000 + step), batchSize, true).slice(0, count);
}

export function orderedBatches(size: number, batchSize: number, count: number): number[][] {
  return batchIndices(Array.from({ length: size }, (_, i) => i), batchSize, false).slice(0, count);
}
