import * as tf from '@tensorflow/tfjs';

/**
 * Differentiable building blocks with hand-written gradients. tfjs's own gradients ask the
 * matmul kernel for transposed operands (13x slower on wasm) and build long chains of
 * element-wise intermediates; these transpose explicitly and keep the backward short.
 */

/** a @ b for 2-D tensors; the backward transposes explicitly, then runs plain matmuls. */
export const mm = tf.customGrad((a, b, save) => {
  const [x, w] = [a as tf.Tensor2D, b as tf.Tensor2D];
  (save as tf.GradSaveFunc)([x, w]);
  return {
    value: tf.matMul(x, w),
    gradFunc: (dy, saved) => {
      const [sx, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(dy as tf.Tensor2D, tf.transpose(sw)), tf.matMul(tf.transpose(sx), dy as tf.Tensor2D)];
    },
  };
}) as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

export const LAYER_NORM_EPS = 1e-5;

/** LayerNorm over the last axis of [N, D] (biased variance, eps 1e-5, as the reference). */
export const layerNorm = tf.customGrad((xIn, scaleIn, shiftIn, save) => {
  const [x, scale, shift] = [xIn as tf.Tensor2D, scaleIn as tf.Tensor1D, shiftIn as tf.Tensor1D];
  const xc = tf.sub(x, tf.mean(x, -1, true));
  const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), LAYER_NORM_EPS));
  const xhat = tf.mul(xc, rstd);
  (save as tf.GradSaveFunc)([xhat, rstd, scale]);
  return {
    value: tf.add(tf.mul(xhat, scale), shift),
    gradFunc: (dy, saved) => {
      const [sxhat, srstd, sscale] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
      const dxhat = tf.mul(dy, sscale);
      const dScale = tf.sum(tf.mul(dy, sxhat), 0);
      const dShift = tf.sum(dy, 0);
      const meanD = tf.mean(dxhat, -1, true);
      const meanDx = tf.mean(tf.mul(dxhat, sxhat), -1, true);
      const dx = tf.mul(tf.sub(tf.sub(dxhat, meanD), tf.mul(sxhat, meanDx)), srstd);
      return [dx, dScale, dShift];
    },
  };
}) as (x: tf.Tensor2D, scale: tf.Tensor1D, shift: tf.Tensor1D) => tf.Tensor2D;

// GELU(tanh) = 0.5 x (1 + tanh(c (x + 0.044715 x^3))) = x * sigmoid(2c (x + 0.044715 x^3)).
// The sigmoid form avoids wasm's slow tanh (~10x slower than its sigmoid).
const GELU_A = 2 * Math.sqrt(2 / Math.PI);
const GELU_B = GELU_A * 0.044715;

export const gelu = tf.customGrad((xIn, save) => {
  const x = xIn as tf.Tensor;
  const x2 = tf.square(x);
  const s = tf.sigmoid(tf.mul(x, tf.add(tf.mul(x2, GELU_B), GELU_A)));
  (save as tf.GradSaveFunc)([x, x2, s]);
  return {
    value: tf.mul(x, s),
    gradFunc: (dy, saved) => {
      const [sx, sx2, ss] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
      // d/dx [x s(u)] = s + x s (1 - s) u',  u' = a + 3 b x^2
      const du = tf.add(tf.mul(sx2, 3 * GELU_B), GELU_A);
      const ds = tf.mul(tf.mul(ss, tf.sub(1, ss)), tf.mul(sx, du));
      return [tf.mul(dy, tf.add(ss, ds))];
    },
  };
}) as <T extends tf.Tensor>(x: T) => T;

/** x @ w + b, with b optional. */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D | null): tf.Tensor2D {
  const y = mm(x, w);
  return b ? tf.add(y, b) : y;
}
