import * as tf from '@tensorflow/tfjs';
import type { BlockParams, ParamLayout, ParamSpec } from './layout.js';
import { paramView } from './layout.js';
import { layerNorm, linear, gelu, mm } from './ops.js';

/** Width of the vocabulary head's column blocks: wide single matmuls run at half speed on wasm. */
export const HEAD_BLOCK = 8192;

/** The model's weights as tensors on the current backend (the embeddings stay in JS). */
export interface ModelTensors {
  blocks: BlockParams<tf.Tensor>[];
  finalNormScale: tf.Tensor1D;
  finalNormShift: tf.Tensor1D;
  /** Column blocks of out_head ([D, width] each) and the first vocabulary id of each. */
  head: tf.Tensor2D[];
  headStarts: number[];
}

export function headBlockRanges(vocabSize: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (let s = 0; s < vocabSize; s += HEAD_BLOCK) ranges.push([s, Math.min(vocabSize, s + HEAD_BLOCK)]);
  return ranges;
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

/** Rebuilds BlockParams from a list in layout order, using `like` for which biases exist. */
export function blockFromList<T>(like: BlockParams<unknown>, list: T[]): BlockParams<T> {
  let i = 0;
  return mapBlock(like, () => list[i++]!);
}

/** Copies the flat weights into tensors. out_head is split into column blocks in JS. */
export function uploadWeights(layout: ParamLayout, flat: Float32Array): ModelTensors {
  const { embDim: D, vocabSize: V } = layout.config;
  const head = paramView(flat, layout.outHead);
  const ranges = headBlockRanges(V);
  return {
    blocks: layout.blocks.map((b) => mapBlock(b, (spec) => specTensor(flat, spec))),
    finalNormScale: specTensor(flat, layout.finalNormScale) as tf.Tensor1D,
    finalNormShift: specTensor(flat, layout.finalNormShift) as tf.Tensor1D,
    head: ranges.map(([s, e]) => {
      const w = e - s;
      const block = new Float32Array(D * w);
      for (let r = 0; r < D; r++) block.set(head.subarray(r * V + s, r * V + e), r * w);
      return tf.tensor2d(block, [D, w]);
    }),
    headStarts: ranges.map(([s]) => s),
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
export function embed(layout: ParamLayout, flat: Float32Array, inputs: Int32Array[], mask: Float32Array | null): Float32Array {
  const D = layout.config.embDim;
  const tok = paramView(flat, layout.tokEmb);
  const pos = paramView(flat, layout.posEmb);
  const T = inputs[0]!.length;
  const out = new Float32Array(inputs.length * T * D);
  inputs.forEach((ids, b) => {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * D;
      const tr = ids[t]! * D;
      const pr = t * D;
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

/** Additive causal mask for the stacked per-head scores [B*H*T, T]: 0 on and below the diagonal. */
export function causalBias(shape: AttentionShape): tf.Tensor2D {
  const { batch, time: T, heads } = shape;
  const one = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) one[i * T + j] = -1e9;
  return tf.tidy(() => tf.tile(tf.tensor2d(one, [T, T]), [batch * heads, 1]) as tf.Tensor2D);
}

export interface BlockMasks {
  attention: tf.Tensor2D;
  attnShortcut: tf.Tensor2D;
  ffShortcut: tf.Tensor2D;
}

/** [B*T, D] -> B*H tensors [T, hd] (transposed: [hd, T]), one per (sample, head). */
function splitHeads(x: tf.Tensor2D, s: AttentionShape, transposed: boolean): tf.Tensor2D[] {
  const { batch: B, time: T, heads: H } = s;
  const hd = x.shape[1] / H;
  const perm = transposed ? [0, 2, 3, 1] : [0, 2, 1, 3];
  const t = tf.transpose(tf.reshape(x, [B, T, H, hd]), perm);
  const rows = transposed ? hd : T;
  return tf.split(tf.reshape(t, [B * H * rows, transposed ? T : hd]), B * H, 0) as tf.Tensor2D[];
}

/**
 * Causal multi-head self-attention. Heads run as plain 2-D matmuls: wasm's batched matmul is
 * ~10x slower than its 2-D one at these sizes.
 */
function attention(x: tf.Tensor2D, p: BlockParams<tf.Tensor>, s: AttentionShape, bias: tf.Tensor2D, mask: tf.Tensor2D | null): tf.Tensor2D {
  const { batch: B, time: T, heads: H } = s;
  const D = x.shape[1];
  const hd = D / H;
  const q = tf.mul(linear(x, p.wQuery as tf.Tensor2D, p.bQuery as tf.Tensor1D | null), 1 / Math.sqrt(hd)) as tf.Tensor2D;
  const k = linear(x, p.wKey as tf.Tensor2D, p.bKey as tf.Tensor1D | null);
  const v = linear(x, p.wValue as tf.Tensor2D, p.bValue as tf.Tensor1D | null);
  const qs = splitHeads(q, s, false);
  const kts = splitHeads(k, s, true);
  const vs = splitHeads(v, s, false);
  const scores = tf.concat(qs.map((qi, i) => mm(qi, kts[i]!)), 0);
  let weights = tf.softmax(tf.add(scores, bias)) as tf.Tensor2D;
  if (mask) weights = tf.mul(weights, mask);
  const ws = tf.split(weights, B * H, 0) as tf.Tensor2D[];
  const ctx = tf.concat(ws.map((wi, i) => mm(wi, vs[i]!)), 0);
  const merged = tf.reshape(tf.transpose(tf.reshape(ctx, [B, H, T, hd]), [0, 2, 1, 3]), [B * T, D]) as tf.Tensor2D;
  return linear(merged, p.wOut as tf.Tensor2D, p.bOut as tf.Tensor1D);
}

/** One pre-LayerNorm transformer block on [B*T, D]. */
export function blockForward(x: tf.Tensor2D, p: BlockParams<tf.Tensor>, s: AttentionShape, bias: tf.Tensor2D, masks: BlockMasks | null): tf.Tensor2D {
  let a = attention(layerNorm(x, p.norm1Scale as tf.Tensor1D, p.norm1Shift as tf.Tensor1D), p, s, bias, masks?.attention ?? null);
  if (masks) a = tf.mul(a, masks.attnShortcut);
  const x1 = tf.add(x, a) as tf.Tensor2D;
  const h = gelu(linear(layerNorm(x1, p.norm2Scale as tf.Tensor1D, p.norm2Shift as tf.Tensor1D), p.wFf1 as tf.Tensor2D, p.bFf1 as tf.Tensor1D));
  let f = linear(h, p.wFf2 as tf.Tensor2D, p.bFf2 as tf.Tensor1D);
  if (masks) f = tf.mul(f, masks.ffShortcut);
  return tf.add(x1, f);
}

export function finalNorm(x: tf.Tensor2D, m: ModelTensors): tf.Tensor2D {
  return layerNorm(x, m.finalNormScale, m.finalNormShift);
}
