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
