import { native, type NativeKernels } from '../native/kernels.js';

/** AdamW with PyTorch semantics on flat Float32Arrays (decoupled weight decay on every element). */
export interface AdamWOptions {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export const ADAMW_DEFAULTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const;

/** First and second moments, in the parameters' flat layout. */
export interface AdamWMoments {
  m: Float32Array;
  v: Float32Array;
}

export function newMoments(size: number): AdamWMoments {
  return { m: new Float32Array(size), v: new Float32Array(size) };
}

/**
 * One AdamW step in place over params[start, end), with gradient `grad * gradScale` (the scale
 * turns the reduced gradient sum into the gradient of the mean loss without another pass).
 * `t` is the 1-based step number used for bias correction. Ranges are independent, so shards
 * can be updated in parallel. Runs natively when the addon is built (same bits).
 */
export function adamwUpdate(
  params: Float32Array, grad: Float32Array, moments: AdamWMoments, opts: AdamWOptions, t: number,
  gradScale = 1, start = 0, end = params.length, kernels: NativeKernels | null = native,
): void {
  const { lr, weightDecay, beta1, beta2, eps } = opts;
  const { m, v } = moments;
  const decay = 1 - lr * weightDecay;
  const stepSize = lr / (1 - beta1 ** t);
  const bc2Sqrt = Math.sqrt(1 - beta2 ** t);
  const oneMinusB1 = 1 - beta1;
  const oneMinusB2 = 1 - beta2;
  if (kernels) {
    kernels.adamw(params, grad, m, v, start, end, decay, stepSize, bc2Sqrt, oneMinusB1, beta2, oneMinusB2, eps, gradScale);
    return;
  }
  for (let i = start; i < end; i++) {
    const g = grad[i]! * gradScale;
    const mi = m[i]! + oneMinusB1 * (g - m[i]!);
    const vi = beta2 * v[i]! + oneMinusB2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i]! * decay - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
  }
}
