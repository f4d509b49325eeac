import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerGroup } from '../comm/group.js';
import type { TrainReply } from '../comm/protocol.js';
import { epochBatches, evalTrainBatches, orderedBatches, type SplitData } from '../data/dataset.js';
import { decode, encode } from '../data/tokenizer.js';
import type { RunConfig } from '../model/config.js';
import type { ParamLayout } from '../model/layout.js';
import { ADAMW_DEFAULTS, type AdamWMoments, type AdamWOptions } from './adamw.js';
import { meanBatchLosses, samplesOf } from './evaluate.js';
import { median, MetricsLog, type SampleRecord, type StepRecord, type StepTiming } from './metrics.js';
import { ProgressBar } from './progress.js';
import { clearTouchedRows, denseRange, reduceEmbeddingRows, unionRows } from './reduce.js';
import { shardBatch } from './shard.js';

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

export interface TrainOptions {
  config: RunConfig;
  layout: ParamLayout;
  data: SplitData;
  group: WorkerGroup;
  /** Initial weights (and moments, when resuming), copied into the group's buffers. */
  initialWeights: Float32Array;
  initialMoments?: AdamWMoments;
  start?: Position;
  outDir: string;
  maxSteps: number | null;
  log: (line: string) => void;
  progress?: ProgressBar;
  /** Polled between steps: true stops the run cleanly (SIGINT). */
  shouldStop?: () => boolean;
  /** Called every `checkpointEvery` steps and when the run ends or stops. */
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

interface StepOutcome {
  loss: number;
  tokens: number;
  timing: StepTiming & { stepSec: number; workers: number; heapBytes: number; liveTensors: number; bytesMoved: number };
}

/**
 * One data-parallel step: shard the global batch, collect gradient sums, reduce them in place,
 * take one AdamW step on the mean-loss gradient and publish the next weight version.
 */
async function dataParallelStep(
  opts: TrainOptions, batch: number[], step: number, adam: AdamWOptions,
): Promise<StepOutcome> {
  const { config, layout, data, group } = opts;
  const t0 = performance.now();
  const shards = shardBatch(samplesOf(data.train, batch), group.size);
  const active = shards.map((s, slot) => ({ s, slot })).filter(({ s }) => s.length > 0);
  const replies: TrainReply[] = await Promise.all(active.map(({ s, slot }) =>
    group.run(slot, { kind: 'train', step, version: step, slot, samples: s, dropout: { rate: config.model.dropRate, seed: config.training.seed } })));
  const t1 = performance.now();

  const slotIds = active.map(({ slot }) => slot);
  const slots = slotIds.map((slot) => group.gradient(slot));
  const touched = replies.map((r) => r.touchedRows);
  reduceEmbeddingRows(layout, slots, touched);
  if (slotIds.length > 1) await group.reduce(slotIds, ...denseRange(layout));
  const tokens = replies.reduce((n, r) => n + r.tokens, 0);
  const t2 = performance.now();
  await group.adamw(slotIds[0]!, step + 1, 1 / tokens, adam);
  const t3 = performance.now();
  clearTouchedRows(layout, slots[0]!, unionRows(touched));
  slots.slice(1).forEach((g, k) => clearTouchedRows(layout, g, touched[k + 1]!));
  await group.publish(step + 1);
  const t4 = performance.now();

  const workerComputeSec = replies.map((r) => seconds(r.computeMs));
  const computeSec = Math.max(...workerComputeSec);
  const [denseStart, denseEnd] = denseRange(layout);
  const dense = denseEnd - denseStart;
  const rowsMoved = touched.reduce((n, rows) => n + rows.length, 0) * layout.config.embDim;
  // Floats copied: weights into each worker's backend (all but the embeddings, read in place),
  // dense gradients and touched embedding rows out of each, other workers' gradients into the sum.
  const floatsMoved = active.length * (dense - layout.posEmb.size) + active.length * dense + rowsMoved + (active.length - 1) * dense;
  return {
    loss: replies.reduce((s, r) => s + r.sampleLoss.reduce((a, b) => a + b, 0), 0) / tokens,
    tokens,
    timing: {
      stepSec: seconds(t4 - t0), workers: active.length, computeSec, waitSec: Math.max(0, seconds(t1 - t0) - computeSec),
      reduceSec: seconds(t2 - t1), optimizerSec: seconds(t3 - t2), publishSec: seconds(t4 - t3), workerComputeSec,
      heapBytes: Math.max(...replies.map((r) => r.heapBytes)), liveTensors: Math.max(...replies.map((r) => r.numTensors)),
      bytesMoved: 4 * floatsMoved,
    },
  };
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
 * sample after each epoch, metrics as they happen. Weight version v is the weights after v steps.
 */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { config, data, group, log } = opts;
  const tc = config.training;
  const start = opts.start ?? START;
  const resuming = start.step > 0;
  const metrics = new MetricsLog(join(opts.outDir, 'metrics.jsonl'), resuming ? start : null);
  const samplesPath = join(opts.outDir, 'samples.txt');
  const sampleLine = (r: SampleRecord) => `Epoch ${r.epoch} (step ${r.step}): ${r.text}\n`;
  writeFileSync(samplesPath, metrics.of('sample').map(sampleLine).join(''));
  group.weights.set(opts.initialWeights);
  if (opts.initialMoments) {
    group.moments.m.set(opts.initialMoments.m);
    group.moments.v.set(opts.initialMoments.v);
  }
  const adam = { lr: tc.lr, weightDecay: tc.weightDecay, ...ADAMW_DEFAULTS };
  const stepsPerEpoch = Math.floor(data.train.size / tc.batchSize);
  const totalSteps = Math.min(stepsPerEpoch * tc.epochs, opts.maxSteps ?? Infinity);

  const pos: Position = { ...start };
  await group.publish(pos.step);
  let peakHeapBytes = 0;
  let interrupted = false;
  const startedAt = performance.now();
  const elapsed = () => start.elapsedSec + seconds(performance.now() - startedAt);
  const say = (line: string) => {
    opts.progress?.clear();
    log(line);
  };
  const save = () => opts.checkpoint?.({ ...pos, elapsedSec: elapsed() });

  outer: for (; pos.epoch < tc.epochs; pos.epoch++, pos.batchInEpoch = 0) {
    const batches = epochBatches(data.train.size, tc.batchSize, tc.seed, pos.epoch);
    while (pos.batchInEpoch < batches.length) {
      if (pos.step >= totalSteps) break outer;
      if (opts.shouldStop?.()) {
        interrupted = true;
        break outer;
      }
      const step = pos.step;
      const r = await dataParallelStep(opts, batches[pos.batchInEpoch]!, step, adam);
      pos.tokensSeen += r.tokens;
      peakHeapBytes = Math.max(peakHeapBytes, r.timing.heapBytes);
      const record: StepRecord = { type: 'step', epoch: pos.epoch + 1, step, tokensSeen: pos.tokensSeen, loss: r.loss, elapsedSec: elapsed(), ...r.timing };
      metrics.write(record);

      if (step % tc.evalFreq === 0) {
        const e0 = performance.now();
        const [trainLoss, valLoss] = await evaluate(opts, step);
        metrics.write({
          type: 'eval', epoch: pos.epoch + 1, step, tokensSeen: pos.tokensSeen, trainLoss: trainLoss!, valLoss: valLoss!,
          elapsedSec: elapsed(), evalSec: seconds(performance.now() - e0),
        });
        say(`Ep ${pos.epoch + 1} (Step ${String(step).padStart(6, '0')}): Train loss ${trainLoss!.toFixed(3)}, Val loss ${valLoss!.toFixed(3)}`);
      }
      pos.step += 1;
      pos.batchInEpoch += 1;
      const runSec = elapsed() - start.elapsedSec;
      opts.progress?.update(pos.step, { loss: r.loss.toFixed(3), 'tok/s': ((pos.tokensSeen - start.tokensSeen) / runSec).toFixed(0) },
        (runSec / (pos.step - start.step)) * (totalSteps - pos.step));
      if (opts.checkpointEvery && pos.step % opts.checkpointEvery === 0 && pos.step < totalSteps) save();
    }
    if (tc.sampleTokens > 0) {
      const reply = await group.run(0, { kind: 'generate', version: pos.step, prompt: encode(tc.startContext), maxNewTokens: tc.sampleTokens });
      const record: SampleRecord = { type: 'sample', epoch: pos.epoch + 1, step: pos.step, text: decode(reply.tokens).replace(/\n/g, ' ') };
      metrics.write(record);
      writeFileSync(samplesPath, sampleLine(record), { flag: 'a' });
      say(record.text);
    }
  }
  opts.progress?.clear();
  save();
  const stepRecords = metrics.of('step');
  return {
    steps: pos.step, tokensSeen: pos.tokensSeen, totalSec: elapsed(),
    medianStepSec: median(stepRecords.map((r) => r.stepSec)), peakHeapBytes, interrupted, metrics, weights: group.weights,
  };
}
