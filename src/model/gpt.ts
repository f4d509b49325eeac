import * as tf from '@tensorflow/tfjs';
import type { BlockParams, ParamLayout, ParamSpec } from './layout.js';
import { headBlocks, paramView } from './layout.js';
import { layerNorm, tidyKeeping, type LayerNormOut } from './ops.js';

/** The model's weights as tensors on the current backend (the embeddings stay in JS). */
export interface ModelTensors {
  blocks: BlockParams<tf.Tensor>[];
  finalNormScale: tf.Tensor1D;
  finalNormShift: tf.Tensor1D;
  /** Column blocks of out_head ([D, width] each) and the first vocabulary id of each. */
  head: tf.Tensor2D[];
  headStarts: number[];
}

function specTensor(flat: Float32Array, spec: ParamSpec): tf.Tensor {
  return tf.tensor(paramView(flat, spec), spec.shape, 'float32');
}

export function mapBlock<A, B>(block: BlockParams<A>, fn: (v: A) => B): BlockParams<B> {
  const out = {} as Record<string, B | null>;
  for (const [k, v] of Object.entries(block) as Array<[string, A | null]>) out[k] = v === null ? null : fn(v);
  return out as unknown as BlockParams<B>;
}

/** A block's parameters in layout order (the order of their offsets in the flat buffer). */
export function blockList<T>(block: BlockParams<T>): T[] {
  const order: Array<keyof BlockParams<T>> = [
    'norm1Scale', 'norm1Shift', 'wQuery', 'bQuery', 'wKey', 'bKey', 'wValue', 'bValue', 'wOut', 'bOut',
    'norm2Scale', 'norm2Shift', 'wFf1', 'bFf1', 'wFf2', 'bFf2',
  ];
  return order.map((k) => block[k]).filter((v): v is T => v !== null);
}

/** Copies the flat weights into tensors (out_head is stored as its column blocks already). */
export function uploadWeights(layout: ParamLayout, flat: Float32Array): ModelTensors {
  const D = layout.config.embDim;
  const blocks = headBlocks(layout);
  return {
    blocks: layout.blocks.map((b) => mapBlock(b, (spec) => specTensor(flat, spec))),
    finalNormScale: specTensor(flat, layout.finalNormScale) as tf.Tensor1D,
    finalNormShift: specTensor(flat, layout.finalNormShift) as tf.Tensor1D,
    head: blocks.map(({ start, end, offset }) => tf.tensor2d(flat.subarray(offset, offset + D * (end - start)), [D, end - start])),
    headStarts: blocks.map(({ start }) => start),
  };
}

export function disposeWeights(m: ModelTensors): void {
  for (const b of m.blocks) tf.dispose(blockList(b));
  tf.dispose([m.finalNormScale, m.finalNormShift, ...m.head]);
}

/**
 * Token plus position embeddings of a local batch, computed in JS from the flat weights
 * ([B*T, D], row b*T + t), times the embedding dropout mask when given.
 */
export function embed(layout: ParamLayout, flat: Float32Array, inputs: Int32Array[], mask: Float32Array | null, firstPosition = 0): Float32Array {
  const D = layout.config.embDim;
  const tok = paramView(flat, layout.tokEmb);
  const pos = paramView(flat, layout.posEmb);
  const T = inputs[0]!.length;
  const out = new Float32Array(inputs.length * T * D);
  inputs.forEach((ids, b) => {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * D;
      const tr = ids[t]! * D;
      const pr = (firstPosition + t) * D;
      for (let d = 0; d < D; d++) out[o + d] = tok[tr + d]! + pos[pr + d]!;
    }
  });
  if (mask) for (let i = 0; i < out.length; i++) out[i]! *= mask[i]!;
  return out;
}

export interface AttentionShape {
  batch: number;
  time: number;
  heads: number;
}

/**
 * Additive causal mask for the stacked per-head scores [B*H*T, past + T] of T queries that follow
 * `past` cached positions: query i may attend keys 0 .. past + i.
 */
export function causalBias(shape: AttentionShape, past = 0): tf.Tensor2D {
  const { batch, time: T, heads } = shape;
  const keys = past + T;
  const one = new Float32Array(T * keys);
  for (let i = 0; i < T; i++) for (let j = past + i + 1; j < keys; j++) one[i * keys + j] = -1e9;
  return tf.tidy(() => tf.tile(tf.tensor2d(one, [T, keys]), [batch * heads, 1]) as tf.Tensor2D);
}

export function finalNorm(x: tf.Tensor2D, m: ModelTensors): LayerNormOut {
  return tidyKeeping(() => layerNorm(x, m.finalNormScale, m.finalNormShift), (r) => [r.y, r.xhat, r.rstd]);
}
