import type { ParamLayout } from '../model/layout.js';

/**
 * All-reduce of worker gradient sums into the first contributing slot, in place. The dense part
 * (everything after the token embedding, which is contiguous) is summed element-wise; of the
 * token embedding only the rows each worker touched are added.
 */
export function reduceGradients(layout: ParamLayout, slots: Float32Array[], touched: number[][]): Float32Array {
  const [target, ...rest] = slots;
  if (!target) throw new Error('reduceGradients: no gradient slots');
  const denseStart = layout.tokEmb.offset + layout.tokEmb.size;
  const end = layout.totalSize;
  const D = layout.config.embDim;
  rest.forEach((src, k) => {
    for (let i = denseStart; i < end; i++) target[i]! += src[i]!;
    for (const row of touched[k + 1] ?? []) {
      const o = layout.tokEmb.offset + row * D;
      for (let d = 0; d < D; d++) target[o + d]! += src[o + d]!;
    }
  });
  return target;
}

/** Zeroes the token-embedding rows a slot accumulated into, so the next step starts clean. */
export function clearTouchedRows(layout: ParamLayout, slot: Float32Array, rows: Iterable<number>): void {
  const D = layout.config.embDim;
  for (const row of rows) {
    const o = layout.tokEmb.offset + row * D;
    slot.fill(0, o, o + D);
  }
}

/** Sorted union of row lists. */
export function unionRows(lists: number[][]): number[] {
  return [...new Set(lists.flat())].sort((a, b) => a - b);
}
