import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerGroup } from '../comm/group.js';
import type { TrainReply } from '../comm/protocol.js';
import { epochBatches, evalTrainBatches, orderedBatches, type SplitData } from '../data/dataset.js';
import { decode, encode } from '../data/tokenizer.js';
import type { RunConfig } from '../model/config.js';
import type { ParamLayout } from '../model/layout.js';
import { ADAMW_DEFAULTS } from './adamw.js';
import { meanBatchLosses, samplesOf } from './evaluate.js';
import { median, MetricsLog, type StepRecord } from './metrics.js';
import { ProgressBar } from './progress.js';
import { clearTouchedRows, denseRange, reduceEmbeddingRows, unionRows } from './reduce.js';
import { shardBatch } from './shard.js';

export interface TrainOptions {
  config: RunConfig;
  layout: ParamLayout;
  data: SplitData;
  group: WorkerGroup;
  /** Initial weights, copied into the group's weight buffer. */
  initialWeights: Float32Array;
  outDir: string;
  maxSteps: number | null;
  log: (line: string) => void;
  progress?: ProgressBar;
  /** Polled between steps: true stops the run cleanly (SIGINT). */
  shouldStop?: () => boolean;
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

/**
 * The data-parallel training loop: per step, shard the global batch, collect gradient sums,
 * reduce them in place, take one AdamW step on the mean-loss gradient and publish the weights.
 */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { config, layout, data, group, log } = opts;
  const tc = config.training;
  const metrics = new MetricsLog(join(opts.outDir, 'metrics.jsonl'));
  const samplesPath = join(opts.outDir, 'samples.txt');
  writeFileSync(samplesPath, '');
  const weights = group.weights;
  weights.set(opts.initialWeights);
  const adamOpts = { lr: tc.lr, weightDecay: tc.weightDecay, ...ADAMW_DEFAULTS };
  const stepsPerEpoch = Math.floor(data.train.size / tc.batchSize);
  const totalSteps = Math.min(stepsPerEpoch * tc.epochs, opts.maxSteps ?? Infinity);
  const evalChunk = tc.batchSize;

  let version = 0;
  await group.publish(version);
  let step = 0;
  let tokensSeen = 0;
  let peakHeapBytes = 0;
  let interrupted = false;
  const start = performance.now();
  const elapsed = () => seconds(performance.now() - start);

  const say = (line: string) => {
    opts.progress?.clear();
    log(line);
  };

  outer: for (let epoch = 0; epoch < tc.epochs; epoch++) {
    for (const batch of epochBatches(data.train.size, tc.batchSize, tc.seed, epoch)) {
      if (step >= totalSteps) break outer;
      if (opts.shouldStop?.()) {
        interrupted = true;
        break outer;
      }
      const t0 = performance.now();
      const shards = shardBatch(samplesOf(data.train, batch), group.size);
      const active = shards.map((s, slot) => ({ s, slot })).filter(({ s }) => s.length > 0);
      const replies: TrainReply[] = await Promise.all(active.map(({ s, slot }) =>
        group.run(slot, { kind: 'train', step, version, slot, samples: s, dropout: { rate: config.model.dropRate, seed: tc.seed } })));
      const t1 = performance.now();

      const slotIds = active.map(({ slot }) => slot);
      const slots = slotIds.map((slot) => group.gradient(slot));
      const touched = replies.map((r) => r.touchedRows);
      reduceEmbeddingRows(layout, slots, touched);
      if (slotIds.length > 1) await group.reduce(slotIds, ...denseRange(layout));
      const tokens = replies.reduce((n, r) => n + r.tokens, 0);
      const t2 = performance.now();
      await group.adamw(slotIds[0]!, step + 1, 1 / tokens, adamOpts);
      const t3 = performance.now();
      clearTouchedRows(layout, slots[0]!, unionRows(touched));
      slots.slice(1).forEach((g, k) => clearTouchedRows(layout, g, touched[k + 1]!));
      version += 1;
      await group.publish(version);
      const t4 = performance.now();

      tokensSeen += tokens;
      const workerComputeSec = replies.map((r) => seconds(r.computeMs));
      const computeSec = Math.max(...workerComputeSec);
      const heapBytes = Math.max(...replies.map((r) => r.heapBytes));
      peakHeapBytes = Math.max(peakHeapBytes, heapBytes);
      const loss = replies.reduce((s, r) => s + r.sampleLoss.reduce((a, b) => a + b, 0), 0) / tokens;
      const record: StepRecord = {
        type: 'step', epoch: epoch + 1, step, tokensSeen, loss,
        stepSec: seconds(t4 - t0), elapsedSec: elapsed(), workers: active.length,
        computeSec, waitSec: Math.max(0, seconds(t1 - t0) - computeSec), reduceSec: seconds(t2 - t1),
        optimizerSec: seconds(t3 - t2), publishSec: seconds(t4 - t3), workerComputeSec, heapBytes,
        liveTensors: Math.max(...replies.map((r) => r.numTensors)),
      };
      metrics.write(record);

      if (step % tc.evalFreq === 0) {
        const e0 = performance.now();
        const [trainLoss, valLoss] = await meanBatchLosses(group, version, [
          { data: data.train, batches: evalTrainBatches(data.train.size, tc.batchSize, tc.seed, step, tc.evalIter) },
          { data: data.val, batches: orderedBatches(data.val.size, tc.batchSize, tc.evalIter) },
        ], evalChunk);
        metrics.write({
          type: 'eval', epoch: epoch + 1, step, tokensSeen, trainLoss: trainLoss!, valLoss: valLoss!,
          elapsedSec: elapsed(), evalSec: seconds(performance.now() - e0),
        });
        say(`Ep ${epoch + 1} (Step ${String(step).padStart(6, '0')}): Train loss ${trainLoss!.toFixed(3)}, Val loss ${valLoss!.toFixed(3)}`);
      }
      step += 1;
      const stepTimes = metrics.of('step').map((r) => r.stepSec);
      const rate = tokensSeen / elapsed();
      opts.progress?.update(step, { loss: loss.toFixed(3), 'tok/s': rate.toFixed(0) }, median(stepTimes) * (totalSteps - step));
    }
    if (tc.sampleTokens > 0) {
      const reply = await group.run(0, { kind: 'generate', version, prompt: encode(tc.startContext), maxNewTokens: tc.sampleTokens });
      const text = decode(reply.tokens).replace(/\n/g, ' ');
      metrics.write({ type: 'sample', epoch: epoch + 1, step, text });
      writeFileSync(samplesPath, `Epoch ${epoch + 1} (step ${step}): ${text}\n`, { flag: 'a' });
      say(text);
    }
  }
  opts.progress?.clear();
  const stepRecords = metrics.of('step');
  return {
    steps: step, tokensSeen, totalSec: elapsed(), medianStepSec: median(stepRecords.map((r) => r.stepSec)),
    peakHeapBytes, interrupted, metrics, weights,
  };
}
