import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { splitText, type SplitData } from '../data/dataset.js';
import { loadRunConfig, parseRunConfig, type RunConfig, type TrainingConfig } from '../model/config.js';
import { UsageError } from '../util/errors.js';

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
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return parseRunConfig({ model: base.model, training: { ...base.training, ...defined } }, `config ${path} with flags`);
}

/** Splits the text and checks that both splits yield at least one batch. */
export function prepareData(text: string, config: RunConfig): SplitData {
  const data = splitText(text, config.training.trainRatio, config.model.contextLength);
  const T = config.model.contextLength;
  if (data.train.size < config.training.batchSize) {
    throw new UsageError(`the training split (${data.trainTokens.length} tokens) gives ${data.train.size} windows of ${T}: fewer than one batch of ${config.training.batchSize}`);
  }
  if (data.val.size === 0) {
    throw new UsageError(`the validation split (${data.valTokens.length} tokens) is too short for one window of ${T} tokens`);
  }
  return data;
}

/** Creates the run directory; refuses one that already holds a run, so nothing is overwritten. */
export function prepareOutDir(out: string | undefined): string {
  const dir = out ?? join('runs', new Date().toISOString().replace(/[:.]/g, '-'));
  if (existsSync(dir) && readdirSync(dir).includes('metrics.jsonl')) {
    throw new UsageError(`--out ${dir} already holds a run (metrics.jsonl); choose another directory`);
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}
