import type { TopLevelSpec } from 'vega-lite';
import { PHASES, type RunData, type RunRow } from './runs.js';


const LOSS_AXIS = { field: 'loss', type: 'quantitative', title: 'Loss (cross-entropy, nats/token)', scale: { zero: false } } as const;

/** Train and val loss of each run against wall-clock seconds or tokens seen. */
export function lossSpec(runs: RunData[], rows: RunRow[], x: 'time' | 'tokens'): TopLevelSpec {
  const label = new Map(rows.map((r) => [r.dir, r.label]));
  const values = runs.flatMap((run) => run.evals.flatMap((e) => {
    const at = x === 'time' ? e.elapsedSec : e.tokensSeen;
    return [
      { at, loss: e.trainLoss, split: 'train', run: label.get(run.dir) },
      { at, loss: e.valLoss, split: 'val', run: label.get(run.dir) },
    ];
  }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: x === 'time' ? 'Loss against wall-clock time' : 'Loss against tokens seen (identical runs coincide)',
    width: 560,
    height: 320,
    data: { values },
    mark: { type: 'line', point: { size: 30, filled: false }, opacity: 0.85 },
    encoding: {
      x: { field: 'at', type: 'quantitative', title: x === 'time' ? 'Wall-clock time (s)' : 'Tokens seen (tokens)' },
      y: LOSS_AXIS,
      color: { field: 'run', type: 'nominal', title: 'Workers' },
      strokeDash: {
        field: 'split', type: 'nominal', title: 'Loss', legend: { symbolType: 'stroke' },
        scale: { domain: ['train', 'val'], range: [[1, 0], [6, 4]] },
      },
      detail: { field: 'split' },
    },
    config: { font: 'DejaVu Sans' },
  };
}

/** The median step of each run split into its phases, as stacked bars. */
export function breakdownSpec(rows: RunRow[]): TopLevelSpec {
  const values = rows.flatMap((r) => PHASES.map(([key, name], order) => ({ run: r.label, phase: name, order, sec: r.phases[key] })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Median training step by phase',
    width: 560,
    height: { step: 40 },
    data: { values },
    mark: 'bar',
    encoding: {
      y: { field: 'run', type: 'nominal', title: 'Workers', sort: rows.map((r) => r.label) },
      x: { field: 'sec', type: 'quantitative', title: 'Time per step (s)', stack: 'zero' },
      color: { field: 'phase', type: 'nominal', title: 'Phase', sort: PHASES.map(([, n]) => n) },
      order: { field: 'order', type: 'quantitative' },
    },
    config: { font: 'DejaVu Sans' },
  };
}
