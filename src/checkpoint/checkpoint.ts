import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdamWMoments } from '../math/adamw.js';
import { parseRunConfig, type RunConfig } from '../model/config.js';
import { paramView, type ParamLayout, type ParamSpec } from '../model/layout.js';
import { UsageError } from '../util/errors.js';
import { readSafetensors, writeFileAtomic, writeSafetensors, type NamedTensor, type SafetensorsFile } from './safetensors.js';

export const FORMAT_VERSION = 1;
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_FILE = 'trainer.json';

/** Where a run stands: enough to continue it exactly. */
export interface TrainerState {
  formatVersion: number;
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
  /** Characters of the training text, to catch a resume on different data. */
  dataCharacters: number;
  /** Slots each step was split into (a resumed run keeps them, so it computes the same sums). */
  slots?: number;
}

/** The reference GPTModel's causal-mask buffers are part of its state_dict. */
const maskName = (block: number) => `trf_blocks.${block}.att.mask`;

function transposed(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}

/** A parameter in PyTorch's shape and row-major layout (Linear weights back to [out, in]). */
function torchTensor(spec: ParamSpec, flat: Float32Array): NamedTensor {
  const data = paramView(flat, spec);
  if (spec.kind !== 'linear') return { shape: [...spec.shape], data };
  const [inDim, outDim] = spec.shape as [number, number];
  return { shape: [outDim, inDim], data: transposed(data, inDim, outDim) };
}

function torchShape(spec: ParamSpec): number[] {
  return spec.kind === 'linear' ? [spec.shape[1]!, spec.shape[0]!] : spec.shape;
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
    const values = spec.kind === 'linear' ? transposed(t.data, want[0]!, want[1]!) : t.data;
    flat.set(values, spec.offset);
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

/** Writes model, optimizer and trainer state; each file atomically, trainer.json last. */
export function saveCheckpoint(dir: string, layout: ParamLayout, weights: Float32Array, moments: AdamWMoments, state: TrainerState): void {
  const meta = { format: 'gpt-ddp', step: String(state.step) };
  writeSafetensors(join(dir, MODEL_FILE), modelTensors(layout, weights), meta);
  const opt = MOMENTS.flatMap(([prefix, key]) =>
    layout.params.map((spec): [string, NamedTensor] => [prefix + spec.name, torchTensor(spec, moments[key])]));
  writeSafetensors(join(dir, OPTIMIZER_FILE), opt, meta);
  writeFileAtomic(join(dir, TRAINER_FILE), [Buffer.from(`${JSON.stringify(state, null, 2)}\n`)]);
}

export interface Checkpoint {
  state: TrainerState;
  weights: Float32Array;
  moments: AdamWMoments;
}

export function readTrainerState(dir: string): TrainerState {
  const path = join(dir, TRAINER_FILE);
  if (!existsSync(path)) throw new UsageError(`${dir} holds no checkpoint (${TRAINER_FILE} is missing)`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new UsageError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (raw.formatVersion !== FORMAT_VERSION) {
    throw new UsageError(`${path}: unknown checkpoint format version ${JSON.stringify(raw.formatVersion)} (this gpt-ddp reads version ${FORMAT_VERSION})`);
  }
  for (const key of ['step', 'epoch', 'batchInEpoch', 'tokensSeen', 'seed', 'dataCharacters'] as const) {
    if (!Number.isInteger(raw[key]) || (raw[key] as number) < 0) throw new UsageError(`${path}: "${key}" must be a non-negative integer`);
  }
  if (raw.slots !== undefined && (!Number.isInteger(raw.slots) || (raw.slots as number) < 1)) throw new UsageError(`${path}: "slots" must be a positive integer`);
  const config = parseRunConfig(raw.config, `${path} config`);
  return { ...(raw as unknown as TrainerState), config };
}

/** Loads a run directory's checkpoint for --resume, checking the files belong together. */
export function loadCheckpoint(dir: string, layout: ParamLayout): Checkpoint {
  const state = readTrainerState(dir);
  const model = readSafetensors(join(dir, MODEL_FILE));
  const optimizer = readSafetensors(join(dir, OPTIMIZER_FILE));
  for (const [name, file] of [[MODEL_FILE, model], [OPTIMIZER_FILE, optimizer]] as const) {
    if (file.metadata.step !== String(state.step)) {
      throw new UsageError(`${join(dir, name)} is from step ${file.metadata.step ?? '?'} but ${TRAINER_FILE} from step ${state.step}: the checkpoint is inconsistent`);
    }
  }
  const weights = flatFromTensors(layout, model, join(dir, MODEL_FILE));
  const optPath = join(dir, OPTIMIZER_FILE);
  for (const name of optimizer.tensors.keys()) {
    if (!MOMENTS.some(([prefix]) => name.startsWith(prefix))) throw new UsageError(`${optPath}: unexpected tensor "${name}"`);
  }
  const [m, v] = MOMENTS.map(([prefix]) => {
    const named = [...optimizer.tensors].filter(([n]) => n.startsWith(prefix)).map(([n, t]): [string, NamedTensor] => [n.slice(prefix.length), t]);
    return flatFromTensors(layout, { tensors: new Map(named), metadata: {} }, `${optPath} (${prefix}*)`, false);
  });
  return { state, weights, moments: { m: m!, v: v! } };
}
