import type { ModelConfig } from './config.js';

/**
 * Matmul FLOPs of one forward pass over `batch` sequences of `time` tokens, counted once
 * (2 per multiply-add), split into the transformer blocks and the vocabulary head.
 */
export function forwardFlops(c: ModelConfig, batch: number, time: number): { blocks: number; head: number; total: number } {
  const rows = batch * time;
  const D = c.embDim;
  const projections = 2 * rows * (4 * D * D + 2 * D * 4 * D);
  const attention = 2 * 2 * batch * time * time * D; // scores and weighted sum, all heads
  const blocks = c.nLayers * (projections + attention);
  const head = 2 * rows * D * c.vocabSize;
  return { blocks, head, total: blocks + head };
}

/** A training step's floor: the backward costs twice the forward; recomputation is not counted. */
export function trainStepFlops(c: ModelConfig, batch: number, time: number): number {
  return 3 * forwardFlops(c, batch, time).total;
}
