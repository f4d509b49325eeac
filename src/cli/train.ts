import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ThreadGroup } from '../comm/threads.js';
import { ProgressBar } from '../coordinator/progress.js';
import { train, type TrainResult } from '../coordinator/trainer.js';
import { loadVerdict } from '../data/verdict.js';
import type { BackendChoice } from '../model/backend.js';
import { initParams } from '../model/init.js';
import { buildLayout } from '../model/layout.js';
import { lossPlotSpec } from '../report/loss-plot.js';
import { writeChart } from '../report/render.js';
import { loadConfig, prepareData, prepareOutDir, resolveConfigPath, type TrainingOverrides } from './common.js';

export interface TrainArgs extends TrainingOverrides {
  config: string;
  data?: string;
  out?: string;
  backend: BackendChoice;
  workers: number;
  maxSteps?: number;
  /** Test hook passed to the worker threads (see worker/thread.ts). */
  fault?: string;
}

export interface TrainRun extends TrainResult {
  outDir: string;
  backend: string;
}

const GiB = 2 ** 30;

/** `gpt-ddp train`: validates everything, then trains with a coordinator and worker threads. */
export async function runTrain(args: TrainArgs, log: (line: string) => void): Promise<TrainRun> {
  const { epochs, lr, weightDecay, batchSize, seed, evalFreq, evalIter } = args;
  const config = loadConfig(args.config, { epochs, lr, weightDecay, batchSize, seed, evalFreq, evalIter });
  const source = await loadVerdict(args.data);
  const data = prepareData(source.text, config);
  const outDir = prepareOutDir(args.out);
  const layout = buildLayout(config.model);
  const initialWeights = initParams(layout, config.training.seed);
  const group = new ThreadGroup(args.workers, config.model, layout.totalSize, args.backend, args.fault ?? null);

  let stopRequested = false;
  const onSignal = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    log('stopping after the current step (press Ctrl-C again to abort now)');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const hellos = await Promise.all(Array.from({ length: group.size }, (_, slot) => group.run(slot, { kind: 'hello' })));
    const backend = hellos[0]!.backend;
    const B = config.training.batchSize;
    const stepsPerEpoch = Math.floor(data.train.size / B);
    log(`gpt-ddp: ${resolveConfigPath(args.config)}, ${layout.totalSize.toLocaleString('en-US')} parameters, backend ${backend}, ${group.description}`);
    log(`data: ${source.origin}: ${data.characters} characters, ${data.trainTokens.length} train / ${data.valTokens.length} val tokens, ` +
      `${stepsPerEpoch} steps of ${B} x ${config.model.contextLength} tokens per epoch, ${config.training.epochs} epochs`);
    log(`output: ${outDir}`);
    writeFileSync(join(outDir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);

    const result = await train({
      config, layout, data, group, initialWeights, outDir, log,
      maxSteps: args.maxSteps ?? null,
      progress: new ProgressBar(Math.min(stepsPerEpoch * config.training.epochs, args.maxSteps ?? Infinity)),
      shouldStop: () => stopRequested,
    });

    const evals = result.metrics.of('eval');
    if (evals.length > 0) await writeChart(lossPlotSpec(evals, result.steps / stepsPerEpoch, `${layout.totalSize.toLocaleString('en-US')}-parameter GPT on The Verdict (${group.description})`), join(outDir, 'loss'));
    const last = evals.at(-1);
    const summary = {
      config: resolveConfigPath(args.config), parameters: layout.totalSize, backend, workers: group.size,
      steps: result.steps, epochs: result.steps / stepsPerEpoch, tokensSeen: result.tokensSeen,
      totalSec: result.totalSec, medianStepSec: result.medianStepSec, peakHeapBytes: result.peakHeapBytes,
      finalTrainLoss: last?.trainLoss ?? null, finalValLoss: last?.valLoss ?? null,
      minValLoss: evals.length ? Math.min(...evals.map((e) => e.valLoss)) : null,
      interrupted: result.interrupted,
    };
    writeFileSync(join(outDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
    log(`${result.interrupted ? 'stopped' : 'done'}: ${result.steps} steps in ${result.totalSec.toFixed(1)} s, median step ${result.medianStepSec.toFixed(2)} s, ` +
      `peak wasm heap ${(result.peakHeapBytes / GiB).toFixed(2)} GiB; outputs in ${outDir}`);
    return { ...result, outDir, backend };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await group.close();
  }
}
