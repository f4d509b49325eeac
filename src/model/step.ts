import * as tf from '@tensorflow/tfjs';
import { floatValues } from './backend.js';
import { batchMask, siteAttention, siteAttnShortcut, siteFfShortcut, SITE_EMBEDDING, type DropoutPlan } from './dropout.js';
import {
  activationFloats, blockBackward, blockForward, blockForwardSaving, disposeActivations, type BlockActivations, type BlockMasks,
} from './block.js';
import { blockList, causalBias, embed, finalNorm, type AttentionShape, type ModelTensors } from './gpt.js';
import { headLoss } from './head.js';
import { headBlocks, type ParamLayout, type ParamSpec } from './layout.js';
import { layerNormBackward } from './ops.js';

/**
 * Bytes of block activations kept from the forward for the backward. Blocks beyond the budget
 * keep only their input and recompute their forward during the backward.
 */
export const DEFAULT_ACTIVATION_BUDGET = 1.25 * 2 ** 30;

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

export function shapeOf(layout: ParamLayout, batch: { inputs: Int32Array[] }): AttentionShape {
  return { batch: batch.inputs.length, time: batch.inputs[0]!.length, heads: layout.config.nHeads };
}

export function concatTargets(targets: Int32Array[]): Int32Array {
  const out = new Int32Array(targets.reduce((n, t) => n + t.length, 0));
  let o = 0;
  for (const t of targets) {
    out.set(t, o);
    o += t.length;
  }
  return out;
}

export function sumPerSample(rowLoss: Float32Array, samples: number, T: number): number[] {
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
 * The backward runs block by block in reverse, copying each block's parameter gradients out of
 * the tfjs heap as soon as they exist, and reports each region of `gradientRegions` as it
 * completes (`onRegion`), so it can be sent while the backward goes on. Blocks keep their forward
 * activations while the budget allows; the others keep only their input and recompute their
 * forward when their turn comes.
 */
export function forwardBackward(
  layout: ParamLayout, m: ModelTensors, flat: Float32Array, batch: LocalBatch,
  dropout: DropoutPlan | null, grad: Float32Array, onRegion: (region: number) => void = () => {},
  activationBudget = DEFAULT_ACTIVATION_BUDGET,
): GradResult {
  const clock = new PhaseClock();
  const { embDim: D, nLayers: L } = layout.config;
  const s = shapeOf(layout, batch);
  const T = s.time;
  const useDropout = dropout !== null && dropout.rate > 0;
  const embMask = useDropout ? batchMask(dropout, SITE_EMBEDDING, T * D) : null;
  const bias = causalBias(s);
  const keptBlocks = Math.floor(activationBudget / (4 * activationFloats(s, D)));

  const xs: tf.Tensor2D[] = [tf.tensor2d(embed(layout, flat, batch.inputs, embMask), [s.batch * T, D])];
  const masks: Array<BlockMasks | null> = [];
  const acts: Array<BlockActivations | null> = [];
  clock.lap('embedding');
  for (let i = 0; i < L; i++) {
    const bm = useDropout ? makeBlockMasks(dropout, i, s, D) : null;
    masks.push(bm);
    if (i < keptBlocks) {
      const r = blockForwardSaving(xs[i]!, m.blocks[i]!, s, bias, bm);
      xs.push(r.y);
      acts.push(r.acts);
    } else {
      xs.push(blockForward(xs[i]!, m.blocks[i]!, s, bias, bm));
      acts.push(null);
    }
    clock.lap(`block ${i} forward`);
  }

  const norm = finalNorm(xs[L]!, m);
  // out_head's column blocks are the first regions (see gradientRegions), each sent as it exists.
  const headOffsets = headBlocks(layout).map((b) => b.offset);
  const head = headLoss(norm.y, m, concatTargets(batch.targets), (b, dW) => {
    grad.set(floatValues(dW).subarray(0, dW.size), headOffsets[b]!);
    onRegion(b);
  });
  clock.lap('head: logits, loss and backward');
  const H = headOffsets.length;
  const [dxL, dScale, dShift] = tf.tidy(() => layerNormBackward(head.dh!, norm, m.finalNormScale));
  clock.lap('final norm backward');
  writeParamGrad(grad, layout.finalNormScale, dScale);
  writeParamGrad(grad, layout.finalNormShift, dShift);
  tf.dispose([norm.y, norm.xhat, norm.rstd, head.dh!, dScale, dShift]);
  let dx = dxL;
  clock.lap('gradient extraction');
  onRegion(H);

  for (let i = L - 1; i >= 0; i--) {
    const bm = masks[i] ?? null;
    let a = acts[i];
    if (!a) {
      const r = blockForwardSaving(xs[i]!, m.blocks[i]!, s, bias, bm);
      r.y.dispose();
      a = r.acts;
    }
    const { dx: dxi, grads } = blockBackward(dx, m.blocks[i]!, s, bm, a);
    clock.lap(`block ${i} backward${acts[i] ? '' : ' (recomputed)'}`);
    const specs = blockList(layout.blocks[i]!);
    blockList(grads).forEach((g, k) => writeParamGrad(grad, specs[k]!, g));
    disposeActivations(a);
    tf.dispose([dx, xs[i + 1]!, ...blockList(grads)]);
    if (bm) tf.dispose([bm.attention, bm.attnShortcut, bm.ffShortcut]);
    dx = dxi;
    clock.lap('gradient extraction');
    onRegion(H + L - i);
  }

  const touchedRows = embeddingGrad(layout, grad, batch.inputs, floatValues(dx).slice(), embMask);
  tf.dispose([dx, xs[0]!, bias]);
  clock.lap('embedding backward');
  onRegion(H + L + 1);
  return {
    sampleLoss: sumPerSample(head.rowLoss, s.batch, T),
    tokens: s.batch * T,
    touchedRows,
    phases: clock.phases,
  };
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
