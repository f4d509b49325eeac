import { readFileSync } from 'node:fs';
import { UsageError } from '../util/errors.js';

export interface ModelConfig {
  vocabSize: number;
  contextLength: number;
  embDim: number;
  nHeads: number;
  nLayers: number;
  dropRate: number;
  qkvBias: boolean;
}

export interface TrainingConfig {
  batchSize: number;
  epochs: number;
  lr: number;
  weightDecay: number;
  evalFreq: number;
  evalIter: number;
  seed: number;
  trainRatio: number;
  startContext: string;
  sampleTokens: number;
}

export interface RunConfig {
  model: ModelConfig;
  training: TrainingConfig;
}

type Check = (v: unknown) => boolean;
const positiveInt: Check = (v) => Number.isInteger(v) && (v as number) > 0;
const nonNegativeInt: Check = (v) => Number.isInteger(v) && (v as number) >= 0;
const positiveNumber: Check = (v) => typeof v === 'number' && Number.isFinite(v) && v > 0;
const nonNegativeNumber: Check = (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const probability: Check = (v) => typeof v === 'number' && v >= 0 && v < 1;
const openUnit: Check = (v) => typeof v === 'number' && v > 0 && v < 1;
const bool: Check = (v) => typeof v === 'boolean';
const text: Check = (v) => typeof v === 'string' && v.length > 0;

const MODEL_FIELDS: Record<keyof ModelConfig, [Check, string]> = {
  vocabSize: [positiveInt, 'a positive integer'],
  contextLength: [positiveInt, 'a positive integer'],
  embDim: [positiveInt, 'a positive integer'],
  nHeads: [positiveInt, 'a positive integer'],
  nLayers: [positiveInt, 'a positive integer'],
  dropRate: [probability, 'a number in [0, 1)'],
  qkvBias: [bool, 'true or false'],
};

const TRAINING_FIELDS: Record<keyof TrainingConfig, [Check, string]> = {
  batchSize: [positiveInt, 'a positive integer'],
  epochs: [positiveInt, 'a positive integer'],
  lr: [positiveNumber, 'a positive number'],
  weightDecay: [nonNegativeNumber, 'a non-negative number'],
  evalFreq: [positiveInt, 'a positive integer'],
  evalIter: [positiveInt, 'a positive integer'],
  seed: [nonNegativeInt, 'a non-negative integer'],
  trainRatio: [openUnit, 'a number in (0, 1)'],
  startContext: [text, 'a non-empty string'],
  sampleTokens: [nonNegativeInt, 'a non-negative integer'],
};

function checkSection<T>(raw: unknown, section: string, fields: Record<string, [Check, string]>, where: string): T {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new UsageError(`${where}: "${section}" must be an object`);
  }
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!(key in fields)) throw new UsageError(`${where}: unknown field "${section}.${key}"`);
  }
  for (const [key, [check, expected]] of Object.entries(fields)) {
    if (!(key in obj)) throw new UsageError(`${where}: missing field "${section}.${key}"`);
    if (!check(obj[key])) {
      throw new UsageError(`${where}: "${section}.${key}" must be ${expected}, got ${JSON.stringify(obj[key])}`);
    }
  }
  return obj as T;
}

/** Validates a parsed config object; `where` names its source in error messages. */
export function parseRunConfig(raw: unknown, where = 'config'): RunConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new UsageError(`${where}: expected a JSON object with "model" and "training"`);
  }
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (key !== 'model' && key !== 'training') throw new UsageError(`${where}: unknown field "${key}"`);
  }
  const model = checkSection<ModelConfig>(obj.model, 'model', MODEL_FIELDS, where);
  const training = checkSection<TrainingConfig>(obj.training, 'training', TRAINING_FIELDS, where);
  validateModelConfig(model, where);
  return { model: { ...model }, training: { ...training } };
}

export function validateModelConfig(m: ModelConfig, where = 'config'): void {
  if (m.embDim % m.nHeads !== 0) {
    throw new UsageError(`${where}: model.embDim (${m.embDim}) must be divisible by model.nHeads (${m.nHeads})`);
  }
}

/** The GPT-2 tokenizer's vocabulary: its token ids go up to 50256. */
const TOKENIZER_VOCAB = 50257;

/** A smaller vocabulary would let the tokenizer's ids index past the embedding. */
export function checkTokenizerVocab(m: ModelConfig, where = 'config'): void {
  if (m.vocabSize < TOKENIZER_VOCAB) {
    throw new UsageError(`${where}: model.vocabSize (${m.vocabSize}) is smaller than the GPT-2 tokenizer's ${TOKENIZER_VOCAB} tokens: token ids would index past the embedding`);
  }
}

export function loadRunConfig(path: string): RunConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read config ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`config ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseRunConfig(raw, `config ${path}`);
}
