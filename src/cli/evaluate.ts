import { Cluster } from '../comm/cluster.js';
import { meanBatchLosses } from '../coordinator/evaluate.js';
import { evalTrainBatches, orderedBatches } from '../data/dataset.js';
import type { BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import { loadModelArg } from './checkpoint-args.js';
import { loadRunText } from './common.js';

export interface EvaluateArgs {
  checkpoint: string;
  config?: string;
  data?: string;
  batches?: number;
  workers: number;
  backend: BackendChoice;
  /** Matmul provider (default auto). */
  kernels?: KernelChoice;
}

/**
 * Train and val loss of a checkpoint, dropout off, computed as the training loop's evaluation
 * after the checkpoint's last step (the same draw of training batches).
 */
export async function evaluateCheckpoint(args: EvaluateArgs): Promise<Record<string, number | string>> {
  const model = loadModelArg(args.checkpoint, args.config);
  const tc = model.config.training;
  const { data } = await loadRunText(args.data, model.config);
  const batches = args.batches ?? tc.evalIter;
  const group = new Cluster({ layout: model.layout, backend: args.backend, kernels: args.kernels ?? 'auto', localWorkers: args.workers, maxSlots: args.workers });
  try {
    await group.start({ weights: model.weights, version: 0 });
    const trainBatches = evalTrainBatches(data.train.size, tc.batchSize, tc.seed, Math.max(0, model.step - 1), batches);
    const valBatches = orderedBatches(data.val.size, tc.batchSize, batches);
    const [trainLoss, valLoss] = await meanBatchLosses(group, 0, [
      { data: data.train, batches: trainBatches }, { data: data.val, batches: valBatches },
    ], tc.batchSize);
    return { checkpoint: args.checkpoint, step: model.step, trainLoss: trainLoss!, valLoss: valLoss!, trainBatches: trainBatches.length, valBatches: valBatches.length };
  } finally {
    await group.close();
  }
}
