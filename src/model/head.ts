import * as tf from '@tensorflow/tfjs';
import { floatValues } from './backend.js';
import type { ModelTensors } from './gpt.js';
import { matmulAT, matmulBT } from './ops.js';


export interface HeadResult {
  /** Cross-entropy of each row (token) of h. */
  rowLoss: Float32Array;
  /** d(sum of rowLoss)/dh, when the gradient was asked for. */
  dh: tf.Tensor2D | null;
}

/** Takes d(sum of rowLoss)/d(column block b of out_head), [D, width]; the head disposes it afterwards. */
export type HeadBlockGradient = (block: number, dW: tf.Tensor2D) => void;

/**
 * Vocabulary head and cross-entropy over column blocks of out_head, with a hand-written
 * backward. Each block's softmax runs on the fast native kernel; the global log-sum-exp comes
 * from the per-block ones (a block's max softmax value is 1 / its sum of exponentials).
 */
export function headLoss(h: tf.Tensor2D, m: ModelTensors, targets: Int32Array, onGradient: HeadBlockGradient | null): HeadResult {
  const withGrad = onGradient !== null;
  const N = h.shape[0];
  const targetLogit = new Float32Array(N);
  const probs: tf.Tensor2D[] = [];
  const lseParts: tf.Tensor2D[] = [];
  m.head.forEach((w, b) => {
    const start = m.headStarts[b]!;
    const width = w.shape[1];
    const [soft, lse] = tf.tidy(() => {
      const logits = tf.matMul(h, w);
      const vals = floatValues(logits);
      for (let n = 0; n < N; n++) {
        const t = targets[n]! - start;
        if (t >= 0 && t < width) targetLogit[n] = vals[n * width + t]!;
      }
      const soft = tf.softmax(logits) as tf.Tensor2D;
      const lse = tf.sub(tf.max(logits, 1, true), tf.log(tf.max(soft, 1, true))) as tf.Tensor2D;
      return [soft, lse];
    });
    lseParts.push(lse);
    if (withGrad) probs.push(soft);
    else soft.dispose();
  });
  const lse = tf.tidy(() => tf.logSumExp(tf.concat(lseParts, 1), 1, true)) as tf.Tensor2D;
  const lseVals = lse.dataSync();
  const rowLoss = new Float32Array(N);
  for (let n = 0; n < N; n++) rowLoss[n] = lseVals[n]! - targetLogit[n]!;
  if (!withGrad) {
    tf.dispose([lse, ...lseParts]);
    return { rowLoss, dh: null };
  }

  let dhT: tf.Tensor2D | null = null;
  m.head.forEach((w, b) => {
    const start = m.headStarts[b]!;
    const width = w.shape[1];
    const local = new Int32Array(N);
    for (let n = 0; n < N; n++) {
      const t = targets[n]! - start;
      local[n] = t >= 0 && t < width ? t : -1;
    }
    // softmax over the whole vocabulary = block softmax * exp(lse_block - lse)
    const d = tf.tidy(() => tf.sub(tf.mul(probs[b]!, tf.exp(tf.sub(lseParts[b]!, lse))), tf.oneHot(tf.tensor1d(local, 'int32'), width)) as tf.Tensor2D);
    probs[b]!.dispose();
    // This block's weight gradient first: it can leave while the rest of the head's backward runs.
    const dW = tf.tidy(() => matmulAT(h, d));
    onGradient(b, dW);
    dW.dispose();
    const partial = tf.tidy(() => matmulBT(w, d));
    d.dispose();
    if (dhT) {
      const sum = tf.add(dhT, partial) as tf.Tensor2D;
      tf.dispose([dhT, partial]);
      dhT = sum;
    } else {
      dhT = partial;
    }
  });
  const dh = tf.transpose(dhT!);
  tf.dispose([dhT!, lse, ...lseParts]);
  return { rowLoss, dh };
}
