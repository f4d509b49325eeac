import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { newMoments, type AdamWMoments } from '../math/adamw.js';
import { parseRunConfig, type RunConfig } from '../model/config.js';
import { initParams } from '../model/init.js';
import { headBlockRanges, paramView, type ParamLayout, type ParamSpec } from '../model/layout.js';
import { UsageError } from '../util/errors.js';
import { fsyncPath, writeFileAtomic } from '../util/files.js';
import { readSafetensors, writeSafetensorsDurable, type NamedTensor, type SafetensorsFile } from './safetensors.js';

/** 2: the checkpoint files live in a set directory that trainer.json (written last) names. */
const FORMAT_VERSION = 2;
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_FILE = 'trainer.json';
export const CHECKPOINTS_DIR = 'checkpoints';

/** Where a run stands: enough to continue it exactly. */
export interface TrainerState {
  formatVersion: number;
  /** Random at the run's creation; every checkpoint file carries it (null for format 1). */
  runId: string | null;
  /**
   * The directory of this step's checkpoint files, relative to the run directory; null at step 0
   * of a run that started from its seed: its weights are initParams(layout, seed) and its moments
   * zero, so they are made again rather than written (1.5 GB and 6 s for the 124M model).
   */
  checkpoint: string | null;
  /** Optimizer steps completed (the next step's index). */
  step: number;
  /** 0-based epoch and batch index of the next step in that epoch's seeded order. */
  epoch: number;
  batchInEpoch: number;
  tokensSeen: number;
  elapsedSec: number;
  /** Every random draw derives from the seed and (epoch, step, sample), so this is the RNG state. */
  seed: number;
  config: RunConfig;
  backend: string;
  /** Characters of the training text, and a hash of its tokens (null for format 1): a resume on other data is refused. */
  dataCharacters: number;
  dataFingerprint: string | null;
  /** Slots each step was split into (a resumed run keeps them, so it computes the same sums). */
  slots?: number;
  /** The weights file the run started from (resolved path), or null. */
  initFrom?: string | null;
}

/** What the caller of saveCheckpoint says; the format and the set's place are the checkpoint's business. */
type CheckpointState = Omit<TrainerState, 'formatVersion' | 'checkpoint'>;

export const checkpointSetName = (step: number) => `${CHECKPOINTS_DIR}/step-${String(step).padStart(8, '0')}`;

/** The reference GPTModel's causal-mask buffers are part of its state_dict. */
const maskName = (block: number) => `trf_blocks.${block}.att.mask`;

function transposed(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}

const isLinear = (spec: ParamSpec) => spec.kind === 'linear' || spec.kind === 'headLinear';

/**
 * A Linear weight's column blocks [s, e) as stored, each a row-major [in, e - s] matrix at in x s:
 * out_head's blocks, or one block for a plain Linear. Each is PyTorch's rows s..e transposed.
 */
const columnBlocks = (spec: ParamSpec): Array<[number, number]> => (spec.kind === 'headLinear' ? headBlockRanges(spec.shape[1]!) : [[0, spec.shape[1]!]]);

/** A parameter in PyTorch's shape and row-major layout (Linear weights back to [out, in]). */
function torchTensor(spec: ParamSpec, flat: Float32Array): NamedTensor {
  const data = paramView(flat, spec);
  if (!isLinear(spec)) return { shape: [...spec.shape], data };
  const [inDim, outDim] = spec.shape as [number, number];
  const rows = new Float32Array(data.length);
  for (const [s, e] of columnBlocks(spec)) rows.set(transposed(data.subarray(inDim * s, inDim * e), inDim, e - s), inDim * s);
  return { shape: [outDim, inDim], data: rows };
}

function torchShape(spec: ParamSpec): number[] {
  return isLinear(spec) ? [spec.shape[1]!, spec.shape[0]!] : spec.shape;
}

/** The model's state_dict tensors, named and shaped as the reference PyTorch GPTModel's. */
export function modelTensors(layout: ParamLayout, flat: Float32Array): Array<[string, NamedTensor]> {
  const T = layout.config.contextLength;
  const mask = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = 1;
  const out: Array<[string, NamedTensor]> = layout.params.map((spec) => [spec.name, torchTensor(spec, flat)]);
  layout.blocks.forEach((_, i) => out.push([maskName(i), { shape: [T, T], data: mask }]));
  return out;
}

/** Reads tensors named as `modelTensors` writes them into the flat layout, checking every name and shape. */
export function flatFromTensors(layout: ParamLayout, file: SafetensorsFile, where: string, withMasks = true): Float32Array {
  const flat = new Float32Array(layout.totalSize);
  const expected = new Set(layout.params.map((p) => p.name));
  const masks = new Set(withMasks ? layout.blocks.map((_, i) => maskName(i)) : []);
  for (const name of file.tensors.keys()) {
    if (!expected.has(name) && !masks.has(name)) throw new UsageError(`${where}: unexpected tensor "${name}" (not in this model; check --config)`);
  }
  for (const spec of layout.params) {
    const t = file.tensors.get(spec.name);
    if (!t) throw new UsageError(`${where}: missing tensor "${spec.name}"`);
    const want = torchShape(spec);
    if (t.shape.join() !== want.join()) {
      throw new UsageError(`${where}: tensor "${spec.name}" has shape [${t.shape.join(', ')}], the model needs [${want.join(', ')}] (check --config)`);
    }
    if (!isLinear(spec)) flat.set(t.data, spec.offset);
    else for (const [s, e] of columnBlocks(spec)) flat.set(transposed(t.data.subarray(want[1]! * s, want[1]! * e), e - s, want[1]!), spec.offset + want[1]! * s);
  }
  for (const name of masks) {
    const t = file.tensors.get(name);
    const T = layout.config.contextLength;
    if (t && t.shape.join() !== `${T},${T}`) throw new UsageError(`${where}: buffer "${name}" has shape [${t.shape.join(', ')}], expected [${T}, ${T}]`);
  }
  return flat;
}

export function loadWeightsFile(layout: ParamLayout, path: string): Float32Array {
  return flatFromTensors(layout, readSafetensors(path), path);
}

const MOMENTS = [['exp_avg.', 'm'], ['exp_avg_sq.', 'v']] as const;

/** The set trainer.json names now, or null (none yet). I/O errors propagate: a guess could delete the committed set. */
function committedSet(dir: string): string | null {
  let text: string;
  try {
    text = readFileSync(join(dir, TRAINER_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const parsed = JSON.parse(text) as { checkpoint?: unknown };
  return typeof parsed.checkpoint === 'string' ? parsed.checkpoint : null;
}

/**
 * Writes a checkpoint so that a crash at any instant leaves the previous complete one or this one:
 * the files go into a temporary directory, which is flushed and renamed to the step's set; then
 * trainer.json, naming the set, replaces the old one atomically (the commit); then older sets and
 * leftovers are removed. model.safetensors in the run directory links to the latest weights.
 */
export function saveCheckpoint(dir: string, layout: ParamLayout, weights: Float32Array, moments: AdamWMoments, state: CheckpointState): void {
  const name = fromSeed(state) ? null : checkpointSetName(state.step);
  const sets = join(dir, CHECKPOINTS_DIR);
  // The same step again (e.g. the final save after a periodic one) has the same weights: only trainer.json changes.
  if (name !== null && committedSet(dir) !== name) {
    if (!existsSync(sets)) {
      mkdirSync(sets);
      fsyncPath(dir);
    }
    const tmp = join(sets, `.incomplete-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    const meta = { format: 'gpt-ddp', run: state.runId ?? '', step: String(state.step) };
    writeSafetensorsDurable(join(tmp, MODEL_FILE), modelTensors(layout, weights), meta);
    const opt = MOMENTS.flatMap(([prefix, key]) =>
      layout.params.map((spec): [string, NamedTensor] => [prefix + spec.name, torchTensor(spec, moments[key])]));
    writeSafetensorsDurable(join(tmp, OPTIMIZER_FILE), opt, meta);
    fsyncPath(tmp);
    rmSync(join(dir, name), { recursive: true, force: true }); // an uncommitted set of this step from a crash
    renameSync(tmp, join(dir, name));
    fsyncPath(sets);
  }
  const full: TrainerState = { formatVersion: FORMAT_VERSION, ...state, checkpoint: name };
  writeFileAtomic(join(dir, TRAINER_FILE), [Buffer.from(`${JSON.stringify(full, null, 2)}\n`)]);
  if (name === null) return;
  linkLatestWeights(dir, name);
  removeStale(dir, name);
}

/** Step 0 of a run whose weights come from its seed: nothing to write but trainer.json. */
const fromSeed = (state: Pick<TrainerState, 'step' | 'initFrom'>) => state.step === 0 && !state.initFrom;

function linkLatestWeights(dir: string, set: string): void {
  const tmp = join(dir, `${MODEL_FILE}.tmp-${process.pid}`);
  rmSync(tmp, { force: true });
  symlinkSync(join(set, MODEL_FILE), tmp);
  renameSync(tmp, join(dir, MODEL_FILE));
}

/** Older sets, sets a crash left uncommitted, format-1 files, temporary files of interrupted writes. */
function removeStale(dir: string, keep: string): void {
  for (const entry of readdirSync(join(dir, CHECKPOINTS_DIR))) {
    if (`${CHECKPOINTS_DIR}/${entry}` !== keep) rmSync(join(dir, CHECKPOINTS_DIR, entry), { recursive: true, force: true });
  }
  for (const entry of readdirSync(dir)) {
    if (entry === OPTIMIZER_FILE || /\.tmp-\d+$/.test(entry)) rmSync(join(dir, entry), { force: true });
  }
}

export interface Checkpoint {
  state: TrainerState;
  weights: Float32Array;
  moments: AdamWMoments;
}

const nonNegativeInteger = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;

/** trainer.json, validated field by field: a file edited by hand or from another version is refused with the reason. */
export function readTrainerState(dir: string): TrainerState {
  const path = join(dir, TRAINER_FILE);
  if (!existsSync(path)) {
    const started = existsSync(join(dir, 'metrics.jsonl')) ? `; the run stopped before its first checkpoint: start it over with --out ${dir} --force` : '';
    throw new UsageError(`${dir} holds no checkpoint (${TRAINER_FILE} is missing)${started}`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new UsageError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UsageError(`${path}: not a JSON object`);
  const version = raw.formatVersion;
  if (version !== FORMAT_VERSION && version !== 1) {
    throw new UsageError(`${path}: unknown checkpoint format version ${JSON.stringify(version)} (this gpt-ddp reads versions 1 and ${FORMAT_VERSION})`);
  }
  const fail = (field: string, must: string) => new UsageError(`${path}: "${field}" ${must}, got ${JSON.stringify(raw[field])}`);
  for (const key of ['step', 'epoch', 'batchInEpoch', 'tokensSeen', 'seed', 'dataCharacters'] as const) {
    if (!nonNegativeInteger(raw[key])) throw fail(key, 'must be a non-negative integer');
  }
  if (typeof raw.elapsedSec !== 'number' || !(raw.elapsedSec >= 0) || !Number.isFinite(raw.elapsedSec)) throw fail('elapsedSec', 'must be a non-negative number');
  if (typeof raw.backend !== 'string') throw fail('backend', 'must be a string');
  if (raw.slots !== undefined && (!Number.isInteger(raw.slots) || (raw.slots as number) < 1)) throw fail('slots', 'must be a positive integer');
  if (raw.initFrom !== undefined && raw.initFrom !== null && typeof raw.initFrom !== 'string') throw fail('initFrom', 'must be a path or null');
  const config = parseRunConfig(raw.config, `${path} config`);
  const state = { ...(raw as unknown as TrainerState), config };
  if (version === 1) return { ...state, runId: null, dataFingerprint: null, checkpoint: '.' };
  if (typeof raw.runId !== 'string' || !/^[0-9a-f]{32}$/.test(raw.runId)) throw fail('runId', 'must be 32 hexadecimal digits');
  if (typeof raw.dataFingerprint !== 'string' || !/^[0-9a-f]{64}$/.test(raw.dataFingerprint)) throw fail('dataFingerprint', 'must be 64 hexadecimal digits');
  if (raw.checkpoint === null ? !fromSeed(state) : raw.checkpoint !== checkpointSetName(state.step)) {
    throw fail('checkpoint', `must be "${checkpointSetName(state.step)}"${fromSeed(state) ? ' or null' : ''} for step ${state.step}${state.initFrom ? ' of a run started from --init-from' : ''}`);
  }
  const tc = config.training;
  if (state.seed !== tc.seed) throw fail('seed', `must equal the config's seed ${tc.seed}`);
  if (state.slots !== undefined && state.slots > tc.batchSize) throw fail('slots', `cannot exceed the batch size ${tc.batchSize}`);
  if (state.tokensSeen !== state.step * tc.batchSize * config.model.contextLength) throw fail('tokensSeen', `must be step x batch size x context length = ${state.step * tc.batchSize * config.model.contextLength}`);
  if (state.epoch > tc.epochs) throw fail('epoch', `cannot exceed the config's ${tc.epochs} epochs`);
  return state;
}

/** A checkpoint file of the run's committed set, checked to belong to this run and step. */
function readCheckpointFile(dir: string, state: TrainerState & { checkpoint: string }, file: string): SafetensorsFile {
  const path = join(dir, state.checkpoint, file);
  if (!existsSync(path)) throw new UsageError(`${path} is missing: the checkpoint of step ${state.step} is incomplete`);
  const read = readSafetensors(path);
  if (read.metadata.step !== String(state.step)) {
    throw new UsageError(`${path} is from step ${read.metadata.step ?? '?'} but ${TRAINER_FILE} from step ${state.step}: the checkpoint is inconsistent`);
  }
  if (state.runId !== null && read.metadata.run !== state.runId) {
    throw new UsageError(`${path} belongs to another run (run id ${read.metadata.run ?? 'none'}, this run's is ${state.runId})`);
  }
  return read;
}

/** The weights of the set that `state` (the run directory's trainer.json) names: what evaluate, generate and --resume load. */
export function loadCheckpointWeights(dir: string, state: TrainerState, layout: ParamLayout): Float32Array {
  if (!hasFiles(state)) return initParams(layout, state.seed);
  return flatFromTensors(layout, readCheckpointFile(dir, state, MODEL_FILE), join(dir, state.checkpoint, MODEL_FILE));
}

const hasFiles = (state: TrainerState): state is TrainerState & { checkpoint: string } => state.checkpoint !== null;

/** Loads a run directory's checkpoint for --resume (`state`: its trainer.json), checking the files belong together. */
export function loadCheckpoint(dir: string, state: TrainerState, layout: ParamLayout): Checkpoint {
  if (!hasFiles(state)) return { state, weights: initParams(layout, state.seed), moments: newMoments(layout.totalSize) };
  const weights = loadCheckpointWeights(dir, state, layout);
  const optimizer = readCheckpointFile(dir, state, OPTIMIZER_FILE);
  const optPath = join(dir, state.checkpoint, OPTIMIZER_FILE);
  for (const name of optimizer.tensors.keys()) {
    if (!MOMENTS.some(([prefix]) => name.startsWith(prefix))) throw new UsageError(`${optPath}: unexpected tensor "${name}"`);
  }
  const [m, v] = MOMENTS.map(([prefix]) => {
    const named = [...optimizer.tensors].filter(([n]) => n.startsWith(prefix)).map(([n, t]): [string, NamedTensor] => [n.slice(prefix.length), t]);
    return flatFromTensors(layout, { tensors: new Map(named), metadata: {} }, `${optPath} (${prefix}*)`, false);
  });
  return { state, weights, moments: { m: m!, v: v! } };
}
