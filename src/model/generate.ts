import * as tf from '@tensorflow/tfjs';
import type { ModelTensors } from './gpt.js';
import type { ParamLayout } from './layout.js';

import { hiddenStates } from './step.js';

/** Logits of the next token after `context` (at most contextLength tokens). */
export function nextTokenLogits(layout: ParamLayout, m: ModelTensors, flat: Float32Array, context: number[]): Float32Array {
  const h = hiddenStates(layout, m, flat, [Int32Array.from(context)]);
  const logits = tf.tidy(() => {
    const last = tf.slice(h, [context.length - 1, 0], [1, layout.config.embDim]);
    return tf.concat(m.head.map((w) => tf.matMul(last, w)), 1);
  });
  const out = logits.dataSync() as Float32Array;
  tf.dispose([h, logits]);
  return out;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** Greedy decoding, cropping the context to the model's context length as the reference does. */
export function generateGreedy(layout: ParamLayout, m: ModelTensors, flat: Float32Array, prompt: number[], maxNewTokens: number): number[] {
  const tokens = [...prompt];
  for (let i = 0; i < maxNewTokens; i++) {
    const context = tokens.slice(-layout.config.contextLength);
    tokens.push(argmax(nextTokenLogits(layout, m, flat, context)));
  }
  return tokens;
}
