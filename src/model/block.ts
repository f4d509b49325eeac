import * as tf from '@tensorflow/tfjs';
import { blockList, type AttentionShape } from './gpt.js';
import type { BlockParams } from './layout.js';
import { columnSum, gelu, geluBackward, layerNorm, layerNormBackward, linear, matmulAT, matmulBackward, matmulBT, tidyKeeping, type LayerNormOut } from './ops.js';
import { transposesAreFree } from './provider.js';

/** Dropout masks of one block (inverted-dropout scales, 0 where dropped). */
export interface BlockMasks {
  attention: tf.Tensor2D;
  attnShortcut: tf.Tensor2D;
  ffShortcut: tf.Tensor2D;
}

/** What the backward of a block needs from its forward. */
export interface BlockActivations {
  ln1: Omit<LayerNormOut, 'y'>;
  h1: tf.Tensor2D;
  /** Query (already scaled by 1/sqrt(head dim)), key and value projections, [B*T, D]. */
  q: tf.Tensor2D;
  k: tf.Tensor2D;
  v: tf.Tensor2D;
  /** Attention weights before dropout, per (sample, head) stacked: [B*H*T, T]. */
  attn: tf.Tensor2D;
  merged: tf.Tensor2D;
  ln2: Omit<LayerNormOut, 'y'>;
  h2: tf.Tensor2D;
  u: tf.Tensor2D;
  s: tf.Tensor2D;
  g: tf.Tensor2D;
}

/** Floats a block's activations hold, for the recomputation budget. */
export function activationFloats(s: AttentionShape, embDim: number): number {
  const rows = s.batch * s.time;
  return rows * embDim * 8 + rows * 4 * embDim * 3 + s.batch * s.heads * s.time * s.time + rows * 4;
}

type T2 = tf.Tensor2D;
type T1 = tf.Tensor1D;

type T4 = tf.Tensor4D;

/** [B*T, H*hd] -> [B, H, T, hd]. */
function heads(x: T2, s: AttentionShape): T4 {
  const { batch: B, heads: H } = s;
  return tf.transpose(tf.reshape(x, [B, x.shape[0] / B, H, x.shape[1] / H]), [0, 2, 1, 3]);
}

/** Inverse of heads. */
function mergeHeads(x: T4): T2 {
  const [B, H, T, hd] = x.shape;
  return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [B * T, H * hd]);
}

/** [B*H*T, Tk] (one row per query of each sample and head) <-> [B, H, T, Tk]. */
const perHead = (x: T2, s: AttentionShape): T4 => tf.reshape(x, [s.batch, s.heads, x.shape[0] / (s.batch * s.heads), x.shape[1]]);
const stacked = (x: T4): T2 => tf.reshape(x, [x.shape[0] * x.shape[1] * x.shape[2], x.shape[3]]);

/**
 * op(a) op(b) for every (sample, head): one batched product on the native providers; on wasm,
 * whose batched kernel is ~10x slower than its 2-D one at these sizes, one 2-D product per head.
 */
function headProducts(a: T4, b: T4, transposeA: boolean, transposeB: boolean): T4 {
  if (transposesAreFree()) return tf.matMul(a, b, transposeA, transposeB);
  const [B, H] = a.shape;
  const pieces = (x: T4, t: boolean) => tf.split(tf.reshape(x, [B * H * x.shape[2], x.shape[3]]), B * H, 0).map((p) => (t ? tf.transpose(p) : p));
  const bs = pieces(b, transposeB);
  const products = pieces(a, transposeA).map((ai, i) => tf.matMul(ai, bs[i]!));
  return tf.reshape(tf.concat(products, 0), [B, H, products[0]!.shape[0]!, products[0]!.shape[1]!]);
}

const maybeMask = (x: T2, mask: T2 | undefined): T2 => (mask ? (tf.mul(x, mask) as T2) : x);

/**
 * One pre-LayerNorm transformer block on [B*T, D]: causal multi-head attention and a GELU
 * feed-forward, each with dropout on its residual branch. Heads run as plain 2-D matmuls:
 * wasm's batched matmul is ~10x slower than its 2-D one at these sizes.
 */
function forward(
  x: T2, p: BlockParams<tf.Tensor>, s: AttentionShape, bias: T2, masks: BlockMasks | null, past: KeyValues | null = null,
): { y: T2; acts: BlockActivations } {
  const hd = x.shape[1] / s.heads;
  const ln1 = layerNorm(x, p.norm1Scale as T1, p.norm1Shift as T1);
  const h1 = ln1.y;
  const q = tf.mul(linear(h1, p.wQuery as T2, p.bQuery as T1 | null), 1 / Math.sqrt(hd)) as T2;
  const newK = linear(h1, p.wKey as T2, p.bKey as T1 | null);
  const newV = linear(h1, p.wValue as T2, p.bValue as T1 | null);
  // With cached keys and values (one sequence), the queries attend the past positions too.
  const k = past ? (tf.concat([past.k, newK], 0) as T2) : newK;
  const v = past ? (tf.concat([past.v, newV], 0) as T2) : newV;
  const scores = stacked(headProducts(heads(q, s), heads(k, s), false, true));
  const attn = tf.softmax(tf.add(scores, bias)) as T2;
  const dropped = maybeMask(attn, masks?.attention);
  const merged = mergeHeads(headProducts(perHead(dropped, s), heads(v, s), false, false));
  const x1 = tf.add(x, maybeMask(linear(merged, p.wOut as T2, p.bOut as T1), masks?.attnShortcut)) as T2;
  const ln2 = layerNorm(x1, p.norm2Scale as T1, p.norm2Shift as T1);
  const h2 = ln2.y;
  const u = linear(h2, p.wFf1 as T2, p.bFf1 as T1);
  const { y: g, s: sig } = gelu(u);
  const y = tf.add(x1, maybeMask(linear(g, p.wFf2 as T2, p.bFf2 as T1), masks?.ffShortcut)) as T2;
  const acts: BlockActivations = {
    ln1: { xhat: ln1.xhat, rstd: ln1.rstd }, h1, q, k, v, attn, merged,
    ln2: { xhat: ln2.xhat, rstd: ln2.rstd }, h2, u, s: sig, g,
  };
  return { y, acts };
}

function activationTensors(a: BlockActivations): tf.Tensor[] {
  return [a.ln1.xhat, a.ln1.rstd, a.h1, a.q, a.k, a.v, a.attn, a.merged, a.ln2.xhat, a.ln2.rstd, a.h2, a.u, a.s, a.g];
}

/** The block's output, keeping nothing else. */
export function blockForward(x: T2, p: BlockParams<tf.Tensor>, s: AttentionShape, bias: T2, masks: BlockMasks | null): T2 {
  return tf.tidy(() => forward(x, p, s, bias, masks).y);
}

/** Keys and values of the positions seen so far, [positions, D] (a key-value cache entry). */
export interface KeyValues {
  k: T2;
  v: T2;
}

/** Inference with a key-value cache: the block's output and the keys and values including the new rows. */
export function blockForwardCached(x: T2, p: BlockParams<tf.Tensor>, s: AttentionShape, bias: T2, past: KeyValues | null): { y: T2; present: KeyValues } {
  return tidyKeeping(() => {
    const { y, acts } = forward(x, p, s, bias, null, past);
    return { y, present: { k: acts.k, v: acts.v } };
  }, (r) => [r.y, r.present.k, r.present.v]);
}

/** The block's output and the activations its backward needs (the caller disposes them). */
export function blockForwardSaving(x: T2, p: BlockParams<tf.Tensor>, s: AttentionShape, bias: T2, masks: BlockMasks | null): { y: T2; acts: BlockActivations } {
  return tidyKeeping(() => forward(x, p, s, bias, masks), (r) => [r.y, ...activationTensors(r.acts)]);
}

export function disposeActivations(a: BlockActivations): void {
  tf.dispose(activationTensors(a));
}

/** Sum over rows, or null where the parameter does not exist. */
const biasGrad = (d: T2, exists: unknown): T1 | null => (exists ? columnSum(d) : null);

/** The gradient of the block's input and of its parameters, given the gradient of its output. */
export function blockBackward(
  dy: T2, p: BlockParams<tf.Tensor>, s: AttentionShape, masks: BlockMasks | null, a: BlockActivations,
): { dx: T2; grads: BlockParams<tf.Tensor> } {
  return tidyKeeping(() => {
    const hd = dy.shape[1] / s.heads;
    // Feed-forward branch.
    const df = maybeMask(dy, masks?.ffShortcut);
    const [dg, wFf2] = matmulBackward(df, a.g, p.wFf2 as T2);
    const du = geluBackward(dg, a.u, a.s);
    const [dh2, wFf1] = matmulBackward(du, a.h2, p.wFf1 as T2);
    const [dx1Norm, norm2Scale, norm2Shift] = layerNormBackward(dh2, a.ln2, p.norm2Scale as T1);
    const dx1 = tf.add(dy, dx1Norm) as T2;

    // Attention branch.
    const dOut = maybeMask(dx1, masks?.attnShortcut);
    const [dMerged, wOut] = matmulBackward(dOut, a.merged, p.wOut as T2);
    const dropped = perHead(maybeMask(a.attn, masks?.attention), s);
    const dCtx = heads(dMerged, s);
    // ctx = W v:  dW = dctx v^T,  dv = W^T dctx
    const v4 = heads(a.v, s);
    const dv = mergeHeads(headProducts(dropped, dCtx, true, false));
    const dAttn = maybeMask(stacked(headProducts(dCtx, v4, false, true)), masks?.attention);
    // softmax backward: dS = W * (dW - rowsum(dW * W))
    const dScores = perHead(tf.mul(a.attn, tf.sub(dAttn, tf.sum(tf.mul(dAttn, a.attn), -1, true))) as T2, s);
    // S = q k^T:  dq = dS k,  dk = dS^T q
    const dq = tf.mul(mergeHeads(headProducts(dScores, heads(a.k, s), false, false)), 1 / Math.sqrt(hd)) as T2;
    const dk = mergeHeads(headProducts(dScores, heads(a.q, s), true, false));
    const dh1 = tf.addN([matmulBT(dq, p.wQuery as T2), matmulBT(dk, p.wKey as T2), matmulBT(dv, p.wValue as T2)]) as T2;
    const [dxNorm, norm1Scale, norm1Shift] = layerNormBackward(dh1, a.ln1, p.norm1Scale as T1);
    const grads: BlockParams<tf.Tensor> = {
      norm1Scale, norm1Shift,
      wQuery: matmulAT(a.h1, dq), wKey: matmulAT(a.h1, dk), wValue: matmulAT(a.h1, dv),
      bQuery: biasGrad(dq, p.bQuery), bKey: biasGrad(dk, p.bKey), bValue: biasGrad(dv, p.bValue),
      wOut, bOut: columnSum(dOut), norm2Scale, norm2Shift, wFf1, bFf1: columnSum(du), wFf2, bFf2: columnSum(df),
    };
    return { dx: tf.add(dx1, dxNorm) as T2, grads };
  }, (r) => [r.dx, ...blockList(r.grads)]);
}
