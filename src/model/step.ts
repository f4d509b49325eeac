import * as tf from '@tensorflow/tfjs';
import { floatValues } from './backend.js';
import { batchMask, siteAttention, siteAttnShortcut, siteFfShortcut, SITE_EMBEDDING, type DropoutPlan } from './dropout.js';
import {
  blockForward, blockFromList, blockList, causalBias, embed, finalNorm, type AttentionShape, type BlockMasks,
  type ModelTensors,
} from './gpt.js';
import { headLoss } from './head.js';
import type { ParamLayout, ParamSpec } from './layout.js';
import { layerNorm } from './ops.js';

/** The samples one worker processes: inputs and targets of equal length, and their dataset ids. */
export interface LocalBatch {
  inputs: Int32Array[];
  targets: Int32Array[];
  sampleIds: number[];
}

export interface GradResult {
  /** Sum of the token losses of each sample. */
  sampleLoss: number[];
  tokens: number;
  /** Token-embedding rows with a non-zero gradient (the sparse part of the gradient). */
  touchedRows: number[];
  /** Milliseconds per phase of the step. */
  phases: Record<string, number>;
}

class PhaseClock {
  readonly phases: Record<string, number> = {};
  private last = performance.now();
  lap(name: string): void {
    const now = performance.now();
    this.phases[name] = (this.phases[name] ?? 0) + (now - this.last);
    this.last = now;
  }
}

function shapeOf(layout: ParamLayout, batch: { inputs: Int32Array[] }): AttentionShape {
  return { batch: batch.inputs.length, time: batch.inputs[0]!.length, heads: layout.config.nHeads };
}

function concatTargets(targets: Int32Array[]): Int32Array {
  const out = new Int32Array(targets.reduce((n, t) => n + t.length, 0));
  let o = 0;
  for (const t of targets) {
    out.set(t, o);
    o += t.length;
  }
  return out;
}

function sumPerSample(rowLoss: Float32Array, samples: number, T: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < samples; b++) {
    let s = 0;
    for (let t = 0; t < T; t++) s += rowLoss[b * T + t]!;
    out.push(s);
  }
  return out;
}

function makeBlockMasks(plan: DropoutPlan, block: number, s: AttentionShape, D: number): BlockMasks {
  const { batch: B, time: T, heads: H } = s;
  return {
    attention: tf.tensor2d(batchMask(plan, siteAttention(block), H * T * T), [B * H * T, T]),
    attnShortcut: tf.tensor2d(batchMask(plan, siteAttnShortcut(block), T * D), [B * T, D]),
    ffShortcut: tf.tensor2d(batchMask(plan, siteFfShortcut(block), T * D), [B * T, D]),
  };
}

function writeParamGrad(grad: Float32Array, spec: ParamSpec, t: tf.Tensor): void {
  grad.set(floatValues(t).subarray(0, spec.size), spec.offset);
}

/**
 * One worker's share of a training step: the gradient of the summed token losses of `batch`,
 * written into `grad` (the flat layout). Dense parameters are overwritten; token-embedding rows
 * are added to (the caller keeps that region zero between steps, so it stays sparse).
 *
 * Memory stays small enough for the 124M model in the wasm heap: the forward keeps only each
 * block's input, and the backward recomputes one block at a time under tf.grads, copying its
 * parameter gradients out of the heap as soon as they exist.
 */
export function forwardBackward(
  layout: ParamLayout, m: ModelTensors, flat: Float32Array, batch: LocalBatch,
  dropout: DropoutPlan | null, grad: Float32Array,
): GradResult {
  const clock = new PhaseClock();
  const { embDim: D, nLayers: L, vocabSize: V } = layout.config;
  const s = shapeOf(layout, batch);
  const T = s.time;
  const useDropout = dropout !== null && dropout.rate > 0;
  const embMask = useDropout ? batchMask(dropout, SITE_EMBEDDING, T * D) : null;
  const bias = causalBias(s);

  const xs: tf.Tensor2D[] = [tf.tensor2d(embed(layout, flat, batch.inputs, embMask), [s.batch * T, D])];
  const masks: Array<BlockMasks | null> = [];
  clock.lap('embedding');
  for (let i = 0; i < L; i++) {
    const bm = useDropout ? makeBlockMasks(dropout, i, s, D) : null;
    masks.push(bm);
    xs.push(tf.tidy(() => blockForward(xs[i]!, m.blocks[i]!, s, bias, bm)));
    clock.lap(`block${i}.forward`);
  }

  const h = finalNorm(xs[L]!, m);
  const head = headLoss(h, m, concatTargets(batch.targets), true);
  h.dispose();
  clock.lap('head');
  const hs = finalNormGrads(m, xs[L]!, head.dh!);
  head.dHead!.forEach((dW, b) => {
    const start = m.headStarts[b]!;
    const width = dW.shape[1];
    const vals = floatValues(dW);
    for (let r = 0; r < D; r++) grad.set(vals.subarray(r * width, (r + 1) * width), layout.outHead.offset + r * V + start);
  });
  writeParamGrad(grad, layout.finalNormScale, hs.dScale);
  writeParamGrad(grad, layout.finalNormShift, hs.dShift);
  tf.dispose([head.dh!, ...head.dHead!, hs.dScale, hs.dShift]);
  let dx = hs.dx;
  clock.lap('head.backward');

  for (let i = L - 1; i >= 0; i--) {
    const params = blockList(m.blocks[i]!);
    const specs = blockList(layout.blocks[i]!);
    const bm = masks[i] ?? null;
    const f = (x: tf.Tensor, ...ps: tf.Tensor[]): tf.Tensor =>
      blockForward(x as tf.Tensor2D, blockFromList(m.blocks[i]!, ps), s, bias, bm);
    const [dxi, ...dps] = tf.grads(f)([xs[i]!, ...params], dx);
    dps.forEach((g, k) => writeParamGrad(grad, specs[k]!, g));
    tf.dispose([dx, xs[i + 1]!, ...dps]);
    if (bm) tf.dispose([bm.attention, bm.attnShortcut, bm.ffShortcut]);
    dx = dxi as tf.Tensor2D;
    clock.lap(`block${i}.backward`);
  }

  const touchedRows = embeddingGrad(layout, grad, batch.inputs, floatValues(dx).slice(), embMask);
  tf.dispose([dx, xs[0]!, bias]);
  clock.lap('embedding.backward');
  return {
    sampleLoss: sumPerSample(head.rowLoss, s.batch, T),
    tokens: s.batch * T,
    touchedRows,
    phases: clock.phases,
  };
}

function finalNormGrads(m: ModelTensors, x: tf.Tensor2D, dh: tf.Tensor2D) {
  const f = (xi: tf.Tensor, sc: tf.Tensor, sh: tf.Tensor): tf.Tensor =>
    layerNorm(xi as tf.Tensor2D, sc as tf.Tensor1D, sh as tf.Tensor1D);
  const [dx, dScale, dShift] = tf.grads(f)([x, m.finalNormScale, m.finalNormShift], dh);
  return { dx: dx as tf.Tensor2D, dScale: dScale!, dShift: dShift! };
}

/** Position-embedding gradient (dense, overwritten) and token-embedding rows (added, sparse). */
function embeddingGrad(layout: ParamLayout, grad: Float32Array, inputs: Int32Array[], dx: Float32Array, mask: Float32Array | null): number[] {
  const D = layout.config.embDim;
  if (mask) for (let i = 0; i < dx.length; i++) dx[i]! *= mask[i]!;
  const pos = grad.subarray(layout.posEmb.offset, layout.posEmb.offset + layout.posEmb.size);
  const tok = grad.subarray(layout.tokEmb.offset, layout.tokEmb.offset + layout.tokEmb.size);
  pos.fill(0);
  const touched = new Set<number>();
  inputs.forEach((ids, b) => {
    const T = ids.length;
    for (let t = 0; t < T; t++) {
      const src = (b * T + t) * D;
      const row = ids[t]!;
      touched.add(row);
      for (let d = 0; d < D; d++) {
        pos[t * D + d]! += dx[src + d]!;
        tok[row * D + d]! += dx[src + d]!;
      }
    }
  });
  return [...touched].sort((a, b) => a - b);
}

/** Summed token loss of each sample, dropout off, as the training loop's evaluation uses. */
export function sampleLosses(layout: ParamLayout, m: ModelTensors, flat: Float32Array, batch: { inputs: Int32Array[]; targets: Int32Array[] }): number[] {
  const s = shapeOf(layout, batch);
  const h = hiddenStates(layout, m, flat, batch.inputs);
  const { rowLoss } = headLoss(h, m, concatTargets(batch.targets), false);
  h.dispose();
  return sumPerSample(rowLoss, s.batch, s.time);
}

/** Final-norm hidden states [B*T, D] of a batch of equal-length inputs, dropout off. */
export function hiddenStates(layout: ParamLayout, m: ModelTensors, flat: Float32Array, inputs: Int32Array[]): tf.Tensor2D {
  const s = shapeOf(layout, { inputs });
  const bias = causalBias(s);
  let x = tf.tensor2d(embed(layout, flat, inputs, null), [s.batch * s.time, layout.config.embDim]);
  for (const block of m.blocks) {
    const next = tf.tidy(() => blockForward(x, block, s, bias, null));
    x.dispose();
    x = next;
  }
  const h = finalNorm(x, m);
  tf.dispose([x, bias]);
  return h;
}
