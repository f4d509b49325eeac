import * as tf from '@tensorflow/tfjs';
import type { ModelTensors } from './gpt.js';
import { disposeCache, hiddenStates, type KvCache } from './inference.js';
import type { ParamLayout } from './layout.js';

/** Logits of the vocabulary for the last row of h. */
function lastRowLogits(m: ModelTensors, h: tf.Tensor2D): Float32Array {
  const logits = tf.tidy(() => {
    const last = tf.slice(h, [h.shape[0] - 1, 0], [1, h.shape[1]]);
    return tf.concat(m.head.map((w) => tf.matMul(last, w)), 1);
  });
  const out = logits.dataSync() as Float32Array;
  logits.dispose();
  return out;
}

/** Logits of the next token after `context` (at most contextLength tokens), by a full forward. */
export function nextTokenLogits(layout: ParamLayout, m: ModelTensors, flat: Float32Array, context: number[]): Float32Array {
  const { h } = hiddenStates(layout, m, flat, [Int32Array.from(context)]);
  const out = lastRowLogits(m, h);
  h.dispose();
  return out;
}

/**
 * Autoregressive generation with a key-value cache: one forward of the prompt, then one-token
 * steps. Past the context length the context is cropped to its last contextLength tokens, as the
 * reference does; positions then shift, so each further token takes a full forward.
 */
export function generate(
  layout: ParamLayout, m: ModelTensors, flat: Float32Array, prompt: number[], maxNewTokens: number,
  pick: (logits: Float32Array) => number,
): number[] {
  const ctx = layout.config.contextLength;
  const tokens = [...prompt];
  let cache: KvCache | null = null;
  try {
    for (let i = 0; i < maxNewTokens; i++) {
      const cached = cache !== null && tokens.length <= ctx;
      const input = cached ? tokens.slice(-1) : tokens.slice(-ctx);
      const r = hiddenStates(layout, m, flat, [Int32Array.from(input)], cached ? cache : null, tokens.length < ctx);
      if (!cached) disposeCache(cache);
      cache = r.cache;
      tokens.push(pick(lastRowLogits(m, r.h)));
      r.h.dispose();
    }
  } finally {
    disposeCache(cache);
  }
  return tokens;
}
