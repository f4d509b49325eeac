import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { loadCheckpoint, readTrainerState, TRAINER_FILE, type TrainerState } from '../checkpoint/checkpoint.js';
import type { Position } from '../coordinator/trainer.js';
import type { SplitData } from '../data/dataset.js';
import type { TextSource } from '../data/verdict.js';
import type { AdamWMoments } from '../math/adamw.js';
import type { RunConfig, TrainingConfig } from '../model/config.js';
import type { BackendChoice } from '../model/backend.js';
import { buildLayout, type ParamLayout } from '../model/layout.js';
import { UsageError } from '../util/errors.js';
import type { RunLock } from '../util/run-lock.js';
import { loadConfig, loadRunText, type RunText, type TrainingOverrides } from './common.js';
import { checkRunFits } from './run-checks.js';

/** Everything a run needs, validated before any thread starts. */
export interface RunSetup {
  config: RunConfig;
  configName: string;
  source: TextSource;
  data: SplitData;
  /** What the run trains on (see dataFingerprint). */
  fingerprint: string;
  runId: string;
  initFrom: string | null;
  layout: ParamLayout;
  outDir: string;
  weights: Float32Array;
  moments?: AdamWMoments;
  start: Position;
  /** Slots per step of the run being resumed. */
  slots?: number;
  /** A new run's directory lock, taken as the directory was prepared. */
  lock?: RunLock;
}

export interface ResumeArgs extends TrainingOverrides {
  resume: string;
  config?: string;
  data?: string;
  /** The text of `data` already read and tokenized. */
  prepared?: RunText;
  out?: string;
  initFrom?: string;
  workers?: number;
  listen?: string;
  backend: BackendChoice;
}

const OVERRIDES: Array<[keyof TrainingOverrides & keyof TrainingConfig, string]> = [
  ['lr', 'lr'], ['weightDecay', 'weight-decay'], ['batchSize', 'batch-size'], ['seed', 'seed'], ['evalFreq', 'eval-freq'], ['evalIter', 'eval-iter'],
];

/**
 * The settings of a resumed run come from its trainer.json. Giving them again (the original command
 * line plus --resume) is fine; a value that differs is refused, naming the setting and both values.
 */
function checkSameSettings(args: ResumeArgs, state: TrainerState): void {
  const where = `the run's settings are in ${resolve(args.resume, TRAINER_FILE)}`;
  const differs = (flag: string, given: unknown, run: unknown) =>
    new UsageError(`--${flag} ${String(given)} differs from the resumed run's ${String(run)} (${where})`);
  const training = state.config.training;
  for (const [key, flag] of OVERRIDES) {
    if (args[key] !== undefined && args[key] !== training[key]) throw differs(flag, args[key], training[key]);
  }
  if (args.out !== undefined && resolve(args.out) !== resolve(args.resume)) throw differs('out', args.out, resolve(args.resume));
  // Format-1 runs did not record it: nothing to compare with.
  if (args.initFrom !== undefined && state.initFrom !== undefined && resolve(args.initFrom) !== state.initFrom) throw differs('init-from', args.initFrom, state.initFrom ?? 'no --init-from');
  if (args.config !== undefined) {
    // The file with the flags given beside it, as the original command line made the run's config.
    const overrides = Object.fromEntries(OVERRIDES.map(([key]) => [key, args[key]]));
    const given = loadConfig(args.config, { ...overrides, epochs: training.epochs });
    const field = firstDifference({ model: given.model, training: given.training }, { model: state.config.model, training });
    if (field) throw new UsageError(`--config ${args.config} differs from the resumed run's config in ${field.path}: ${field.given} vs ${field.run} (${where})`);
  }
}

function firstDifference(given: object, run: object, prefix = ''): { path: string; given: string; run: string } | null {
  for (const key of new Set([...Object.keys(given), ...Object.keys(run)])) {
    const a = (given as Record<string, unknown>)[key];
    const b = (run as Record<string, unknown>)[key];
    const path = prefix ? `${prefix}.${key}` : key;
    if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null) {
      const inner = firstDifference(a, b, path);
      if (inner) return inner;
    } else if (a !== b) {
      return { path, given: JSON.stringify(a), run: JSON.stringify(b) };
    }
  }
  return null;
}

/** The state of a run directory to continue, with its data checked to be the data it was trained on. */
export async function resumeRun(args: ResumeArgs): Promise<RunSetup> {
  const state = readTrainerState(args.resume);
  checkSameSettings(args, state);
  if (args.epochs !== undefined && args.epochs < state.epoch) {
    throw new UsageError(`--epochs ${args.epochs} is fewer than the ${state.epoch} epochs the resumed run has done`);
  }
  const config = { model: state.config.model, training: { ...state.config.training, ...(args.epochs ? { epochs: args.epochs } : {}) } };
  checkRunFits(config, args);
  const { source, data, fingerprint } = await loadRunText(args.data, config, args.prepared);
  if (source.text.length !== state.dataCharacters) {
    throw new UsageError(`the data has ${source.text.length} characters but the run was trained on ${state.dataCharacters}`);
  }
  if (state.dataFingerprint !== null && fingerprint !== state.dataFingerprint) {
    throw new UsageError(`the data's tokens differ from the ones the run was trained on (fingerprint ${fingerprint.slice(0, 12)}, the run's ${state.dataFingerprint.slice(0, 12)}), although the length is the same`);
  }
  const stepsPerEpoch = Math.floor(data.train.size / config.training.batchSize);
  if (state.epoch * stepsPerEpoch + state.batchInEpoch !== state.step || state.batchInEpoch > stepsPerEpoch) {
    throw new UsageError(`${resolve(args.resume, TRAINER_FILE)}: epoch ${state.epoch}, batch ${state.batchInEpoch} is not step ${state.step} at ${stepsPerEpoch} steps per epoch`);
  }
  const layout = buildLayout(config.model);
  const ckpt = loadCheckpoint(args.resume, state, layout);
  return {
    config, configName: `${args.resume} (resumed at step ${state.step})`, source, data, fingerprint, layout,
    // A format-1 run gets an identity from its first new checkpoint on.
    runId: state.runId ?? randomBytes(16).toString('hex'), initFrom: state.initFrom ?? null,
    outDir: args.resume, weights: ckpt.weights, slots: state.slots,
    // Step 0 from the seed: no moments given, so the group writes its zeros itself rather than copying 1.3 GB of them.
    moments: state.checkpoint === null ? undefined : ckpt.moments,
    start: { step: state.step, epoch: state.epoch, batchInEpoch: state.batchInEpoch, tokensSeen: state.tokensSeen, elapsedSec: state.elapsedSec },
  };
}
