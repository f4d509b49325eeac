import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FORMAT_VERSION, loadCheckpoint, loadWeightsFile, readTrainerState, saveCheckpoint } from '../checkpoint/checkpoint.js';
import { ThreadGroup } from '../comm/threads.js';
import type { AdamWMoments } from '../coordinator/adamw.js';
import { ProgressBar } from '../coordinator/progress.js';
import { train, START, type Position, type TrainResult } from '../coordinator/trainer.js';
import type { SplitData } from '../data/dataset.js';
import { loadVerdict, type TextSource } from '../data/verdict.js';
import type { BackendChoice } from '../model/backend.js';
import type { RunConfig } from '../model/config.js';
import { initParams } from '../model/init.js';
import { buildLayout, type ParamLayout } from '../model/layout.js';
import { lossPlotSpec } from '../report/loss-plot.js';
import { writeChart } from '../report/render.js';
import { UsageError } from '../util/errors.js';
import { DEFAULT_CONFIG, loadConfig, prepareData, prepareOutDir, resolveConfigPath, type TrainingOverrides } from './common.js';

export interface TrainArgs extends TrainingOverrides {
  config?: string;
  data?: string;
  out?: string;
  backend: BackendChoice;
  workers: number;
  maxSteps?: number;
  /** Continue the run in this directory from its checkpoint. */
  resume?: string;
  /** Start from these weights (a safetensors file with the reference model's names). */
  initFrom?: string;
  checkpointEvery?: number;
  /** Test hook passed to the worker threads (see worker/thread.ts). */
  fault?: string;
}

export interface TrainRun extends TrainResult {
  outDir: string;
  backend: string;
}

const GiB = 2 ** 30;

interface RunSetup {
  config: RunConfig;
  configName: string;
  source: TextSource;
  data: SplitData;
  layout: ParamLayout;
  outDir: string;
  weights: Float32Array;
  moments?: AdamWMoments;
  start: Position;
}

/** Everything a run needs, validated before any thread starts: a new run or a resumed one. */
async function setUp(args: TrainArgs): Promise<RunSetup> {
  const { epochs, lr, weightDecay, batchSize, seed, evalFreq, evalIter } = args;
  if (args.resume) {
    const fixed = { config: args.config, out: args.out, 'init-from': args.initFrom, lr, 'weight-decay': weightDecay, 'batch-size': batchSize, seed, 'eval-freq': evalFreq, 'eval-iter': evalIter };
    const clash = Object.entries(fixed).find(([, v]) => v !== undefined);
    if (clash) throw new UsageError(`--${clash[0]} cannot change on --resume (the run's settings are in ${join(args.resume, 'trainer.json')})`);
    const state = readTrainerState(args.resume);
    const config = { model: state.config.model, training: { ...state.config.training, ...(epochs ? { epochs } : {}) } };
    const source = await loadVerdict(args.data);
    if (source.text.length !== state.dataCharacters) {
      throw new UsageError(`the data has ${source.text.length} characters but the run was trained on ${state.dataCharacters}`);
    }
    const layout = buildLayout(config.model);
    const ckpt = loadCheckpoint(args.resume, layout);
    return {
      config, configName: `${args.resume} (resumed at step ${state.step})`, source, data: prepareData(source.text, config), layout,
      outDir: args.resume, weights: ckpt.weights, moments: ckpt.moments,
      start: { step: state.step, epoch: state.epoch, batchInEpoch: state.batchInEpoch, tokensSeen: state.tokensSeen, elapsedSec: state.elapsedSec },
    };
  }
  const configName = resolveConfigPath(args.config ?? DEFAULT_CONFIG);
  const config = loadConfig(configName, { epochs, lr, weightDecay, batchSize, seed, evalFreq, evalIter });
  const source = await loadVerdict(args.data);
  const data = prepareData(source.text, config);
  const layout = buildLayout(config.model);
  const weights = args.initFrom ? loadWeightsFile(layout, args.initFrom) : initParams(layout, config.training.seed);
  return { config, configName, source, data, layout, outDir: prepareOutDir(args.out), weights, start: START };
}

/** `gpt-ddp train`: validates everything, then trains with a coordinator and worker threads. */
export async function runTrain(args: TrainArgs, log: (line: string) => void): Promise<TrainRun> {
  const run = await setUp(args);
  const { config, layout, data, outDir } = run;
  const group = new ThreadGroup(args.workers, config.model, layout.totalSize, args.backend, args.fault ?? null);

  let stopRequested = false;
  const onSignal = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    log('stopping after the current step, then saving a checkpoint (press Ctrl-C again to abort now)');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const hellos = await Promise.all(Array.from({ length: group.size }, (_, slot) => group.run(slot, { kind: 'hello' })));
    const backend = hellos[0]!.backend;
    const B = config.training.batchSize;
    const stepsPerEpoch = Math.floor(data.train.size / B);
    const totalSteps = Math.min(stepsPerEpoch * config.training.epochs, args.maxSteps ?? Infinity);
    log(`gpt-ddp: ${run.configName}, ${layout.totalSize.toLocaleString('en-US')} parameters, backend ${backend}, ${group.description}`);
    log(`data: ${run.source.origin}: ${data.characters} characters, ${data.trainTokens.length} train / ${data.valTokens.length} val tokens, ` +
      `${stepsPerEpoch} steps of ${B} x ${config.model.contextLength} tokens per epoch, ${config.training.epochs} epochs`);
    log(`output: ${outDir}`);
    writeFileSync(join(outDir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);

    const result = await train({
      config, layout, data, group, outDir, log,
      initialWeights: run.weights, initialMoments: run.moments, start: run.start,
      maxSteps: args.maxSteps ?? null,
      progress: new ProgressBar(totalSteps),
      shouldStop: () => stopRequested,
      checkpointEvery: args.checkpointEvery,
      checkpoint: (at) => saveCheckpoint(outDir, layout, group.weights, group.moments, {
        formatVersion: FORMAT_VERSION, ...at, seed: config.training.seed, config, backend, dataCharacters: data.characters,
      }),
    });

    const evals = result.metrics.of('eval');
    const title = `${layout.totalSize.toLocaleString('en-US')}-parameter GPT on The Verdict (${group.description})`;
    if (evals.length > 0) await writeChart(lossPlotSpec(evals, result.steps / stepsPerEpoch, title), join(outDir, 'loss'));
    const last = evals.at(-1);
    const summary = {
      config: run.configName, parameters: layout.totalSize, backend, workers: group.size,
      steps: result.steps, epochs: result.steps / stepsPerEpoch, tokensSeen: result.tokensSeen,
      totalSec: result.totalSec, medianStepSec: result.medianStepSec, peakHeapBytes: result.peakHeapBytes,
      finalTrainLoss: last?.trainLoss ?? null, finalValLoss: last?.valLoss ?? null,
      minValLoss: evals.length ? Math.min(...evals.map((e) => e.valLoss)) : null,
      interrupted: result.interrupted,
    };
    writeFileSync(join(outDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
    log(`${result.interrupted ? 'stopped' : 'done'}: ${result.steps} steps in ${result.totalSec.toFixed(1)} s, median step ${result.medianStepSec.toFixed(2)} s, ` +
      `peak wasm heap ${(result.peakHeapBytes / GiB).toFixed(2)} GiB; checkpoint and outputs in ${outDir}` +
      (result.interrupted ? `; continue with --resume ${outDir}` : ''));
    return { ...result, outDir, backend };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await group.close();
  }
}
