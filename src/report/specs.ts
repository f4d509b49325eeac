import type { TopLevelSpec } from 'vega-lite';

/**
 * The Vega-Lite specs that both the static report (rendered headless) and the live dashboard (in
 * the browser) draw: one definition, two renderers. No Node imports here: the browser loads it.
 */

export interface LossPoint {
  at: number;
  loss: number;
  split: 'train' | 'val';
  run: string;
}

const LOSS_AXIS = { field: 'loss', type: 'quantitative', title: 'Loss (cross-entropy, nats/token)', scale: { zero: false } } as const;

/** Train (solid) and val (dashed) loss of each run (one colour each) against `at`. */
export function lossCurvesSpec(values: LossPoint[], xTitle: string, title: string, runTitle: string): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 560,
    height: 320,
    data: { values },
    mark: { type: 'line', point: { size: 30, filled: false }, opacity: 0.85 },
    encoding: {
      x: { field: 'at', type: 'quantitative', title: xTitle },
      y: LOSS_AXIS,
      color: { field: 'run', type: 'nominal', title: runTitle },
      strokeDash: {
        field: 'split', type: 'nominal', title: 'Loss', legend: { symbolType: 'stroke' },
        scale: { domain: ['train', 'val'], range: [[1, 0], [6, 4]] },
      },
      detail: { field: 'split' },
    },
    config: { font: 'DejaVu Sans' },
  };
}

export interface PhasePoint {
  run: string;
  phase: string;
  order: number;
  sec: number;
}

/** Each run's step split into its phases, as stacked bars in the given orders. */
export function phaseBarsSpec(values: PhasePoint[], runs: string[], phases: string[], title: string): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 560,
    height: { step: 40 },
    data: { values },
    mark: 'bar',
    encoding: {
      y: { field: 'run', type: 'nominal', title: 'Run', sort: runs },
      x: { field: 'sec', type: 'quantitative', title: 'Time per step (s)', stack: 'zero' },
      color: { field: 'phase', type: 'nominal', title: 'Phase', sort: phases },
      order: { field: 'order', type: 'quantitative' },
    },
    config: { font: 'DejaVu Sans' },
  };
}

/** Consecutive phases of a step: they add up to its time (the reduction overlaps compute and waiting). */
export type Phase = 'computeSec' | 'waitSec' | 'optimizerSec' | 'publishSec';
export const PHASES: Array<[Phase, string]> = [
  ['computeSec', 'compute'], ['waitSec', 'waiting'], ['optimizerSec', 'optimizer'], ['publishSec', 'publish'],
];
