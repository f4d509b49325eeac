import { join } from 'node:path';
import type { WorkerGroup } from '../comm/group.js';
import { epochBatches, evalTrainBatches, orderedBatches, type SplitData } from '../data/dataset.js';
import { decode, encode } from '../data/tokenizer.js';
import { ADAMW_DEFAULTS } from '../math/adamw.js';
import { shardBatch } from '../math/shard.js';
import type { RunConfig } from '../model/config.js';
import { meanBatchLosses, samplesOf } from './evaluate.js';
import { median } from '../math/stats.js';
import { MetricsLog, type EvalRecord, type MemberRecord, type SampleRecord, type StepRecord } from './metrics.js';

/** Where a run stands between steps. */
export interface Position {
  /** Optimizer steps completed. */
  step: number;
  /** 0-based epoch and batch index of the next step. */
  epoch: number;
  batchInEpoch: number;
  tokensSeen: number;
  elapsedSec: number;
}

export const START: Position = { step: 0, epoch: 0, batchInEpoch: 0, tokensSeen: 0, elapsedSec: 0 };

/** What the loop reports as it happens (every record is also appended to metrics.jsonl). */
export interface TrainEvents {
  step?(record: StepRecord, done: number, totalSteps: number): void;
  eval?(record: EvalRecord): void;
  sample?(record: SampleRecord): void;
  member?(record: MemberRecord): void;
  /** Something the user should know that is not a record (e.g. a torn metrics line dropped on resume). */
  notice?(text: string): void;
}

export interface TrainOptions {
  config: RunConfig;
  data: SplitData;
  /** A started group: it holds the weights (and moments) to continue from. */
  group: WorkerGroup;
  start?: Position;
  outDir: string;
  maxSteps: number | null;
  on?: TrainEvents;
  /** Polled between steps: true stops the run cleanly (SIGINT). */
  shouldStop?: () => boolean;
  /** Called every `checkpointEvery` steps, when the run ends or stops, and when no worker is left. */
  checkpoint?: (at: Position) => void;
  checkpointEvery?: number;
}

export interface TrainResult {
  steps: number;
  tokensSeen: number;
  totalSec: number;
  medianStepSec: number;
  peakHeapBytes: number;
  interrupted: boolean;
  metrics: MetricsLog;
  /** The final weights (the group's buffer, not a copy). */
  weights: Float32Array;
}

const seconds = (ms: number) => ms / 1000;

export function totalSteps(config: RunConfig, trainWindows: number, maxSteps: number | null): number {
  const stepsPerEpoch = Math.floor(trainWindows / config.training.batchSize);
  return Math.min(stepsPerEpoch * config.training.epochs, maxSteps ?? Infinity);
}

/** The reference evaluation after step `step`: mean loss over evalIter train and val batches. */
function evaluate(opts: TrainOptions, step: number): Promise<number[]> {
  const { data, config } = opts;
  const tc = config.training;
  return meanBatchLosses(opts.group, step + 1, [
    { data: data.train, batches: evalTrainBatches(data.train.size, tc.batchSize, tc.seed, step, tc.evalIter) },
    { data: data.val, batches: orderedBatches(data.val.size, tc.batchSize, tc.evalIter) },
  ], tc.batchSize);
}

/**
 * The training loop: epochs of data-parallel steps, an evaluation every evalFreq steps, a greedy
 * sample after each epoch. Weight version v is the weights after v steps.
 */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { config, data, group } = opts;
  const tc = config.training;
  const start = opts.start ?? START;
  const metrics = new MetricsLog(join(opts.outDir, 'metrics.jsonl'), join(opts.outDir, 'samples.txt'), start.step > 0 ? start : null, (t) => opts.on?.notice?.(t));
  const adam = { lr: tc.lr, weightDecay: tc.weightDecay, ...ADAMW_DEFAULTS };
  const total = totalSteps(config, data.train.size, opts.maxSteps);

  const pos: Position = { ...start };
  let peakHeapBytes = 0;
  let interrupted = false;
  const startedAt = performance.now();
  const elapsed = () => start.elapsedSec + seconds(performance.now() - startedAt);
  const save = () => {
    metrics.flush();
    opts.checkpoint?.({ ...pos, elapsedSec: elapsed() });
  };
  // A run killed before its first periodic checkpoint can then still be resumed, not only restarted.
  if (start.step === 0) save();
  for (const m of group.members()) {
    metrics.write({ type: 'member', event: m.kind === 'node' ? 'join' : 'start', step: start.step, member: m.id, host: m.host, threads: m.threads, backend: m.backend, kernels: m.kernels, elapsedSec: elapsed() });
  }
  group.onEvent((e) => {
    const record: MemberRecord = { type: 'member', ...e, elapsedSec: elapsed() };
    metrics.write(record);
    // Nothing has been applied this step yet: the weights are those of `pos.step`.
    if (e.event === 'waiting') save();
    opts.on?.member?.(record);
  });

  outer: for (; pos.epoch < tc.epochs; pos.epoch++, pos.batchInEpoch = 0) {
    const batches = epochBatches(data.train.size, tc.batchSize, tc.seed, pos.epoch);
    while (pos.batchInEpoch < batches.length) {
      if (pos.step >= total) break outer;
      if (opts.shouldStop?.()) {
        interrupted = true;
        break outer;
      }
      const step = pos.step;
      const r = await group.trainStep({
        step, shards: shardBatch(samplesOf(data.train, batches[pos.batchInEpoch]!), group.slots),
        dropout: { rate: config.model.dropRate, seed: tc.seed }, adam,
      });
      pos.tokensSeen += r.tokens;
      peakHeapBytes = Math.max(peakHeapBytes, r.heapBytes);
      const { tokens: _, ...report } = r;
      const record: StepRecord = { type: 'step', epoch: pos.epoch + 1, step, tokensSeen: pos.tokensSeen, elapsedSec: elapsed(), workers: group.slots, ...report };
      metrics.write(record);

      if (step % tc.evalFreq === 0) {
        const e0 = performance.now();
        const [trainLoss, valLoss] = await evaluate(opts, step);
        const evalRecord: EvalRecord = {
          type: 'eval', epoch: pos.epoch + 1, step, tokensSeen: pos.tokensSeen, trainLoss: trainLoss!, valLoss: valLoss!,
          elapsedSec: elapsed(), evalSec: seconds(performance.now() - e0),
        };
        metrics.write(evalRecord);
        opts.on?.eval?.(evalRecord);
      }
      pos.step += 1;
      pos.batchInEpoch += 1;
      opts.on?.step?.(record, pos.step - start.step, total - start.step);
      if (opts.checkpointEvery && pos.step % opts.checkpointEvery === 0 && pos.step < total) save();
    }
    if (tc.sampleTokens > 0) {
      const tokens = await group.generate(pos.step, encode(tc.startContext), tc.sampleTokens);
      const record: SampleRecord = { type: 'sample', epoch: pos.epoch + 1, step: pos.step, text: decode(tokens).replace(/\n/g, ' ') };
      metrics.write(record);
      opts.on?.sample?.(record);
    }
  }
  save();
  const stepRecords = metrics.of('step');
  return {
    steps: pos.step, tokensSeen: pos.tokensSeen, totalSec: elapsed(),
    medianStepSec: median(stepRecords.map((r) => r.stepSec)), peakHeapBytes, interrupted, metrics, weights: group.weights,
  };
}
