import { hashKey, streamU32 } from '../util/rng.js';

/**
 * Dropout masks are a pure function of (seed, step, sample id, site): whichever worker runs a
 * sample draws the same mask, so N workers reproduce a one-worker run.
 * Sites: 0 is the embedding dropout; block i has 1 + 3i (attention weights), 2 + 3i (after
 * attention) and 3 + 3i (after the feed-forward).
 */
export const SITE_EMBEDDING = 0;
export const siteAttention = (block: number): number => 1 + 3 * block;
export const siteAttnShortcut = (block: number): number => 2 + 3 * block;
export const siteFfShortcut = (block: number): number => 3 + 3 * block;

export interface DropoutPlan {
  rate: number;
  seed: number;
  step: number;
  /** The id of each sample in the local batch (its window index in the dataset). */
  sampleIds: number[];
}

/**
 * Fills out[offset .. offset + count) with a mask for one sample at one site: 0 with
 * probability `rate`, else 1 / (1 - rate) (inverted dropout, as PyTorch).
 */
export function fillMask(out: Float32Array, offset: number, count: number, key: number, rate: number): void {
  const threshold = Math.floor(rate * 4294967296);
  const keep = 1 / (1 - rate);
  for (let i = 0; i < count; i++) out[offset + i] = streamU32(key, i) < threshold ? 0 : keep;
}

/** The mask of a whole local batch at one site: each sample's `perSample` values in turn. */
export function batchMask(plan: DropoutPlan, site: number, perSample: number): Float32Array {
  const out = new Float32Array(plan.sampleIds.length * perSample);
  plan.sampleIds.forEach((id, b) => {
    fillMask(out, b * perSample, perSample, hashKey(plan.seed, plan.step, id, site), plan.rate);
  });
  return out;
}
