import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { CHECKPOINTS_DIR, MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE } from '../checkpoint/checkpoint.js';
import { dataFingerprint, splitText, type SplitData } from '../data/dataset.js';
import { loadVerdict, type TextSource } from '../data/verdict.js';
import { checkTokenizerVocab, loadRunConfig, parseRunConfig, type RunConfig, type TrainingConfig } from '../model/config.js';
import { UsageError } from '../util/errors.js';
import { isDirectory } from '../util/files.js';
import { LOCK_NAME, lockRunDir, type RunLock } from '../util/run-lock.js';
import { prepareOutputDir } from './out-dir.js';

/** The configs shipped with the package. */
export const CONFIG_DIR = fileURLToPath(new URL('../../../configs/', import.meta.url));
export const DEFAULT_CONFIG = 'gpt2-124m-verdict';

/** A config path, or the name of a shipped config ("tiny", "gpt2-124m-verdict"). */
export function resolveConfigPath(value: string): string {
  if (!value.includes('/') && !value.endsWith('.json')) {
    const shipped = join(CONFIG_DIR, `${value}.json`);
    if (existsSync(shipped)) return shipped;
  }
  return value;
}

export type TrainingOverrides = Partial<Pick<TrainingConfig,
  'epochs' | 'lr' | 'weightDecay' | 'batchSize' | 'seed' | 'evalFreq' | 'evalIter'>>;

/** Loads a config and applies command-line overrides, validating the result as a whole. */
export function loadConfig(value: string, overrides: TrainingOverrides = {}): RunConfig {
  const path = resolveConfigPath(value);
  const base = loadRunConfig(path);
  checkTokenizerVocab(base.model, `config ${path}`);
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return parseRunConfig({ model: base.model, training: { ...base.training, ...defined } }, `config ${path} with flags`);
}

/** Splits the text and checks that both splits yield at least one batch. */
export function prepareData(text: string, config: RunConfig): SplitData {
  return checkBatches(splitText(text, config.training.trainRatio, config.model.contextLength), config);
}

function checkBatches(data: SplitData, config: RunConfig): SplitData {
  const T = config.model.contextLength;
  if (data.train.size < config.training.batchSize) {
    throw new UsageError(`the training split (${data.trainTokens.length} tokens) gives ${data.train.size} windows of ${T}: fewer than one batch of ${config.training.batchSize}`);
  }
  if (data.val.size === 0) {
    throw new UsageError(`the validation split (${data.valTokens.length} tokens) is too short for one window of ${T} tokens`);
  }
  return data;
}

/** The training text as a run takes it: read, split and tokenized, with its fingerprint. */
export interface RunText {
  source: TextSource;
  data: SplitData;
  /** What the run trains on (see dataFingerprint). */
  fingerprint: string;
  /** The config's values that the split depends on. */
  split: { trainRatio: number; contextLength: number };
}

/**
 * --data (else The Verdict) split and tokenized for this config, checked to fill a batch. `given`
 * (text prepared before: compare prepares it once for all its runs) is taken as it is when it was
 * split the same way, and split again from its text when not.
 */
export async function loadRunText(dataPath: string | undefined, config: RunConfig, given?: RunText): Promise<RunText> {
  const split = { trainRatio: config.training.trainRatio, contextLength: config.model.contextLength };
  if (given && given.split.trainRatio === split.trainRatio && given.split.contextLength === split.contextLength) {
    checkBatches(given.data, config);
    return given;
  }
  const source = given?.source ?? (await loadVerdict(dataPath));
  const data = prepareData(source.text, config);
  return { source, data, fingerprint: dataFingerprint(data), split };
}

/** A name for a default output directory under runs/. */
export const timestamp = () => new Date().toISOString().replace(/[:.]/g, '-');

/** What a run writes at the top of its directory. */
const RUN_OUTPUTS = [
  'config.json', 'metrics.jsonl', 'samples.txt', 'loss.png', 'loss.svg', 'summary.json', 'token', TRAINER_FILE, MODEL_FILE, OPTIMIZER_FILE, CHECKPOINTS_DIR,
];

/**
 * Whether `dir` holds what a run writes before its first checkpoint, and nothing that looks foreign
 * there: its log or checkpoint sets, or only the token of a `--listen` run stopped while it waited for nodes.
 */
function leftByUnfinishedRun(dir: string): boolean {
  if (isDirectory(dir) && readdirSync(dir).filter((e) => e !== LOCK_NAME).join() === 'token') return true;
  const log = join(dir, 'metrics.jsonl');
  const sets = join(dir, CHECKPOINTS_DIR);
  const ourLog = existsSync(log) && /^(\{"type":"|$)/.test(readFileSync(log, 'utf8').slice(0, 9));
  const ourSets = isDirectory(sets) && readdirSync(sets).every((e) => /^(\.incomplete-\d+|step-\d{8})$/.test(e));
  return (ourLog || ourSets) && (!existsSync(log) || ourLog) && (!existsSync(sets) || ourSets);
}

/**
 * Checks, creates and locks a new run's directory (see prepareOutputDir and lockRunDir). One that
 * holds a run is never written over: it is continued with --resume.
 */
export function prepareOutDir(out: string | undefined, force = false): { dir: string; lock: RunLock } {
  const dir = out ?? join('runs', timestamp());
  if (existsSync(join(dir, TRAINER_FILE))) {
    throw new UsageError(`--out ${dir} already holds a run; continue it with --resume ${dir}, or choose another --out`);
  }
  // A run killed before its first checkpoint committed: nothing to resume, so --force starts it over.
  const unfinished = leftByUnfinishedRun(dir);
  if (unfinished && !force) {
    throw new UsageError(`--out ${dir} holds a run that stopped before its first checkpoint (nothing to resume); pass --force to start it over, or choose another --out`);
  }
  // Locked before anything is removed (a live run looks unfinished until its first checkpoint
  // commits), and before the other checks when a lock is there, so a live run is named as such.
  const early = unfinished || existsSync(join(dir, LOCK_NAME)) ? lockRunDir(dir) : null;
  try {
    // The token stays: nodes may have a copy of it already.
    if (unfinished) for (const name of RUN_OUTPUTS.filter((n) => n !== 'token')) rmSync(join(dir, name), { recursive: true, force: true });
    prepareOutputDir(dir, { flag: '--out', kind: 'run', own: unfinished, outputs: RUN_OUTPUTS, force });
    return { dir, lock: early ?? lockRunDir(dir) };
  } catch (err) {
    early?.release();
    throw err;
  }
}
