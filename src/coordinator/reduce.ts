import type { ParamLayout } from '../model/layout.js';

/**
 * All-reduce of worker gradient sums, in place into the first contributing slot. The dense part
 * (every parameter after the token embedding, a contiguous range) is summed element-wise; of the
 * token embedding only the rows each worker touched are added, so it stays sparse.
 */

/** target[i] += each source[i] for i in [start, end). */
export function sumInto(target: Float32Array, sources: Float32Array[], start: number, end: number): void {
  for (const src of sources) {
    for (let i = start; i < end; i++) target[i]! += src[i]!;
  }
}

/** [start, end) of the dense part of the gradient. */
export function denseRange(layout: ParamLayout): [number, number] {
  return [layout.tokEmb.offset + layout.tokEmb.size, layout.totalSize];
}

/** Adds the token-embedding rows each other slot touched into the first slot. */
export function reduceEmbeddingRows(layout: ParamLayout, slots: Float32Array[], touched: number[][]): void {
  const [target, ...rest] = slots;
  const D = layout.config.embDim;
  rest.forEach((src, k) => {
    for (const row of touched[k + 1] ?? []) {
      const o = layout.tokEmb.offset + row * D;
      for (let d = 0; d < D; d++) target![o + d]! += src[o + d]!;
    }
  });
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
