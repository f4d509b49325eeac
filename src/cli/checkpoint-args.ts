import { statSync } from 'node:fs';
import { loadCheckpointWeights, loadWeightsFile, readTrainerState } from '../checkpoint/checkpoint.js';
import type { RunConfig } from '../model/config.js';
import { buildLayout, type ParamLayout } from '../model/layout.js';
import { UsageError } from '../util/errors.js';
import { DEFAULT_CONFIG, loadConfig } from './common.js';

export interface LoadedModel {
  config: RunConfig;
  layout: ParamLayout;
  weights: Float32Array;
  /** Optimizer steps the weights have seen (0 for a bare weights file). */
  step: number;
}

/**
 * `--checkpoint PATH`: a run directory (its trainer.json says which model it is) or a
 * .safetensors file (then --config does, default the 124M config).
 */
export function loadModelArg(path: string, configArg: string | undefined): LoadedModel {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    throw new UsageError(`--checkpoint ${path} does not exist`);
  }
  if (isDir) {
    if (configArg) throw new UsageError(`--config is for a .safetensors file; the run directory ${path} has its own config`);
    const state = readTrainerState(path);
    const layout = buildLayout(state.config.model);
    return { config: state.config, layout, weights: loadCheckpointWeights(path, state, layout), step: state.step };
  }
  const config = loadConfig(configArg ?? DEFAULT_CONFIG);
  const layout = buildLayout(config.model);
  return { config, layout, weights: loadWeightsFile(layout, path), step: 0 };
}
