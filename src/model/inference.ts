import * as tf from '@tensorflow/tfjs';
import { blockForward, blockForwardCached, type KeyValues } from './block.js';
import { causalBias, embed, finalNorm, type ModelTensors } from './gpt.js';
import { headLoss } from './head.js';
import type { ParamLayout } from './layout.js';
import { concatTargets, shapeOf, sumPerSample } from './step.js';

/** Keys and values of every block for the first `positions` tokens of one sequence. */
export interface KvCache {
  positions: number;
  layers: KeyValues[];
}

export function disposeCache(cache: KvCache | null): void {
  if (cache) for (const kv of cache.layers) tf.dispose([kv.k, kv.v]);
}

/**
 * Final-norm hidden states [B*T, D] of a batch of equal-length inputs, dropout off. With `cache`
 * (one sequence), the inputs continue the cached positions and the returned cache covers them
 * too (the old one is disposed); pass `withCache` to start one.
 */
export function hiddenStates(
  layout: ParamLayout, m: ModelTensors, flat: Float32Array, inputs: Int32Array[], cache: KvCache | null = null, withCache = false,
): { h: tf.Tensor2D; cache: KvCache | null } {
  const s = shapeOf(layout, { inputs });
  const past = cache?.positions ?? 0;
  const bias = causalBias(s, past);
  let x = tf.tensor2d(embed(layout, flat, inputs, null, past), [s.batch * s.time, layout.config.embDim]);
  const layers: KeyValues[] = [];
  m.blocks.forEach((block, i) => {
    let next: tf.Tensor2D;
    if (withCache || cache) {
      const r = blockForwardCached(x, block, s, bias, cache?.layers[i] ?? null);
      layers.push(r.present);
      next = r.y;
    } else {
      next = blockForward(x, block, s, bias, null);
    }
    x.dispose();
    x = next;
  });
  disposeCache(cache);
  const { y, xhat, rstd } = finalNorm(x, m);
  tf.dispose([x, bias, xhat, rstd]);
  return { h: y, cache: layers.length ? { positions: past + s.time, layers } : null };
}

/** Summed token loss of each sample, dropout off, as the training loop's evaluation uses. */
export function sampleLosses(layout: ParamLayout, m: ModelTensors, flat: Float32Array, batch: { inputs: Int32Array[]; targets: Int32Array[] }): number[] {
  const s = shapeOf(layout, batch);
  const { h } = hiddenStates(layout, m, flat, batch.inputs);
  const { rowLoss } = headLoss(h, m, concatTargets(batch.targets), null);
  h.dispose();
  return sumPerSample(rowLoss, s.batch, s.time);
}
