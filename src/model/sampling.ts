import type { Rng } from '../util/rng.js';

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

export interface SamplingOptions {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Keep only the k most likely tokens; 0 keeps all. */
  topK: number;
}

/** The next token: argmax at temperature 0, else a draw from softmax(logits / T) over the top k. */
export function pickToken(logits: ArrayLike<number>, opts: SamplingOptions, rng: Rng): number {
  if (opts.temperature === 0) return argmax(logits);
  let floor = -Infinity;
  if (opts.topK > 0 && opts.topK < logits.length) {
    floor = Array.from(logits).sort((a, b) => b - a)[opts.topK - 1]!;
  }
  const max = logits[argmax(logits)]!;
  const weights = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! < floor) continue;
    weights[i] = Math.exp((logits[i]! - max) / opts.temperature);
    total += weights[i]!;
  }
  let u = rng.uniform() * total;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i]! === 0) continue;
    u -= weights[i]!;
    if (u < 0) return i;
  }
  return argmax(logits);
}
