import * as tf from '@tensorflow/tfjs';
import { transposesAreFree } from './provider.js';

/**
 * Forward and hand-written backward of the model's layers. Products with a transposed operand go
 * through matmulAT/matmulBT: free with the native providers, an explicit transpose first on wasm
 * (its kernel is ~13x slower when asked for a transposed operand).
 */

/** a^T b. */
export function matmulAT(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return transposesAreFree() ? tf.matMul(a, b, true, false) : tf.matMul(tf.transpose(a), b);
}

/** a b^T. */
export function matmulBT(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return transposesAreFree() ? tf.matMul(a, b, false, true) : tf.matMul(a, tf.transpose(b));
}

/** dL/dx and dL/dw of y = x @ w. */
export function matmulBackward(dy: tf.Tensor2D, x: tf.Tensor2D, w: tf.Tensor2D): [tf.Tensor2D, tf.Tensor2D] {
  return [matmulBT(dy, w), matmulAT(x, dy)];
}

/** Sum over the rows of [N, D], as a [1, N] x [N, D] matmul: wasm's axis-0 reduction is ~10x slower. */
export function columnSum(x: tf.Tensor2D): tf.Tensor1D {
  return tf.reshape(tf.matMul(tf.ones([1, x.shape[0]]), x), [x.shape[1]]);
}

export const LAYER_NORM_EPS = 1e-5;

export interface LayerNormOut {
  y: tf.Tensor2D;
  /** Normalised input and 1/std per row: what the backward needs. */
  xhat: tf.Tensor2D;
  rstd: tf.Tensor2D;
}

/** LayerNorm over the last axis of [N, D] (biased variance, eps 1e-5, as the reference). */
export function layerNorm(x: tf.Tensor2D, scale: tf.Tensor1D, shift: tf.Tensor1D): LayerNormOut {
  const xc = tf.sub(x, tf.mean(x, -1, true));
  const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), LAYER_NORM_EPS)) as tf.Tensor2D;
  const xhat = tf.mul(xc, rstd) as tf.Tensor2D;
  return { y: tf.add(tf.mul(xhat, scale), shift) as tf.Tensor2D, xhat, rstd };
}

/** [dx, dScale, dShift] of LayerNorm. */
export function layerNormBackward(dy: tf.Tensor2D, out: Omit<LayerNormOut, 'y'>, scale: tf.Tensor1D): [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D] {
  const dxhat = tf.mul(dy, scale);
  const meanD = tf.mean(dxhat, -1, true);
  const meanDx = tf.mean(tf.mul(dxhat, out.xhat), -1, true);
  const dx = tf.mul(tf.sub(tf.sub(dxhat, meanD), tf.mul(out.xhat, meanDx)), out.rstd) as tf.Tensor2D;
  return [dx, columnSum(tf.mul(dy, out.xhat) as tf.Tensor2D), columnSum(dy)];
}

// GELU(tanh) = 0.5 x (1 + tanh(c (x + 0.044715 x^3))) = x * sigmoid(2c (x + 0.044715 x^3)).
// The sigmoid form avoids wasm's slow tanh (~10x slower than its sigmoid).
const GELU_A = 2 * Math.sqrt(2 / Math.PI);
const GELU_B = GELU_A * 0.044715;

export interface GeluOut {
  y: tf.Tensor2D;
  /** sigmoid(u(x)), for the backward. */
  s: tf.Tensor2D;
}

export function gelu(x: tf.Tensor2D): GeluOut {
  const s = tf.sigmoid(tf.mul(x, tf.add(tf.mul(tf.square(x), GELU_B), GELU_A))) as tf.Tensor2D;
  return { y: tf.mul(x, s) as tf.Tensor2D, s };
}

/** d/dx [x s(u)] = s + x s (1 - s) u',  u' = a + 3 b x^2. */
export function geluBackward(dy: tf.Tensor2D, x: tf.Tensor2D, s: tf.Tensor2D): tf.Tensor2D {
  const du = tf.add(tf.mul(tf.square(x), 3 * GELU_B), GELU_A);
  return tf.mul(dy, tf.add(s, tf.mul(tf.mul(s, tf.sub(1, s)), tf.mul(x, du)))) as tf.Tensor2D;
}

/** x @ w + b, with b optional. */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D | null): tf.Tensor2D {
  const y: tf.Tensor2D = tf.matMul(x, w);
  return b ? (tf.add(y, b) as tf.Tensor2D) : y;
}

/** tf.tidy for typed results: keeps exactly the tensors `tensors` lists, disposes the rest. */
export function tidyKeeping<R>(fn: () => R, tensors: (r: R) => tf.Tensor[]): R {
  let result: R | undefined;
  tf.tidy(() => {
    result = fn();
    for (const t of tensors(result)) tf.keep(t);
  });
  return result!;
}
