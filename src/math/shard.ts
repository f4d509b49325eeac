/**
 * Splits a global batch into contiguous shards, one per worker, whose sizes differ by at most
 * one (earlier workers take the extra samples). Workers beyond the batch size get empty shards.
 */
export function shardBatch<T>(items: T[], workers: number): T[][] {
  if (!Number.isInteger(workers) || workers < 1) throw new Error(`shardBatch: workers must be >= 1, got ${workers}`);
  const base = Math.floor(items.length / workers);
  const extra = items.length % workers;
  const shards: T[][] = [];
  let start = 0;
  for (let w = 0; w < workers; w++) {
    const size = base + (w < extra ? 1 : 0);
    shards.push(items.slice(start, start + size));
    start += size;
  }
  return shards;
}

/** Splits [start, end) into `parts` contiguous ranges whose lengths differ by at most one. */
export function shardRange(start: number, end: number, parts: number): Array<[number, number]> {
  const n = end - start;
  const ranges: Array<[number, number]> = [];
  let s = start;
  for (let k = 0; k < parts; k++) {
    const len = Math.floor(n / parts) + (k < n % parts ? 1 : 0);
    ranges.push([s, s + len]);
    s += len;
  }
  return ranges;
}
