import { availableParallelism } from 'node:os';
import type { BackendChoice } from '../model/backend.js';
import type { RunConfig } from '../model/config.js';
import { checkTrainingMemory } from '../model/memory.js';
import { checkBatchFitsTask } from './listen.js';
import { checkWorkerCount } from './options.js';

export interface PlacementArgs {
  workers?: number;
  listen?: string;
  backend: BackendChoice;
}

/** Worker threads in this process: --workers, else the cores, or none when nodes do the work. */
export const localThreads = (args: PlacementArgs) => args.workers ?? (args.listen ? 0 : availableParallelism());

/** What a run's config must allow on this placement (new and resumed runs alike), before anything starts. */
export function checkRunFits(config: RunConfig, args: PlacementArgs): void {
  if (args.workers !== undefined) checkWorkerCount(args.workers, config.training.batchSize);
  checkTrainingMemory(config, localThreads(args), args.backend);
  if (args.listen) checkBatchFitsTask(config);
}
