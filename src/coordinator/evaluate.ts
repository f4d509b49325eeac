import type { WorkerGroup } from '../comm/group.js';
import type { Sample } from '../comm/protocol.js';
import type { WindowDataset } from '../data/dataset.js';
import { shardBatch } from '../math/shard.js';

export function samplesOf(data: WindowDataset, ids: number[]): Sample[] {
  return ids.map((id) => ({ id, input: data.input(id), target: data.target(id) }));
}

/**
 * Mean over batches of each batch's mean token loss, as the reference calc_loss_loader, with
 * dropout off. All batches' samples are pooled and sharded across the workers.
 */
export async function meanBatchLosses(
  group: WorkerGroup, version: number, sets: Array<{ data: WindowDataset; batches: number[][] }>, chunk: number,
): Promise<number[]> {
  const pooled: Array<{ sample: Sample; set: number; batch: number }> = [];
  sets.forEach(({ data, batches }, set) => {
    batches.forEach((ids, batch) => samplesOf(data, ids).forEach((sample) => pooled.push({ sample, set, batch })));
  });
  const shards = shardBatch(pooled, group.slots);
  const losses = await group.losses(version, shards.map((shard) => shard.map((p) => p.sample)), chunk);
  const sums = sets.map(({ batches }) => batches.map(() => ({ loss: 0, tokens: 0 })));
  shards.forEach((shard, slot) => {
    shard.forEach((p, i) => {
      const acc = sums[p.set]![p.batch]!;
      acc.loss += losses[slot]![i]!;
      acc.tokens += p.sample.target.length;
    });
  });
  return sums.map((batches) => batches.reduce((s, b) => s + b.loss / b.tokens, 0) / batches.length);
}
