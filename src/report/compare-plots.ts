import type { TopLevelSpec } from 'vega-lite';
import type { RunData, RunRow } from './runs.js';
import { lossCurvesSpec, PHASES, phaseBarsSpec } from './specs.js';

/** Train and val loss of each run against wall-clock seconds or tokens seen. */
export function lossSpec(runs: RunData[], rows: RunRow[], x: 'time' | 'tokens'): TopLevelSpec {
  const label = new Map(rows.map((r) => [r.dir, r.label]));
  const values = runs.flatMap((run) => run.evals.flatMap((e) => {
    const at = x === 'time' ? e.elapsedSec : e.tokensSeen;
    const r = label.get(run.dir) ?? run.dir;
    return [{ at, loss: e.trainLoss, split: 'train' as const, run: r }, { at, loss: e.valLoss, split: 'val' as const, run: r }];
  }));
  return lossCurvesSpec(values, x === 'time' ? 'Wall-clock time (s)' : 'Tokens seen (tokens)',
    x === 'time' ? 'Loss against wall-clock time' : 'Loss against tokens seen (identical runs coincide)', 'Workers');
}

/** The median step of each run split into its phases, as stacked bars. */
export function breakdownSpec(rows: RunRow[]): TopLevelSpec {
  const values = rows.flatMap((r) => PHASES.map(([key, name], order) => ({ run: r.label, phase: name, order, sec: r.phases[key] })));
  return phaseBarsSpec(values, rows.map((r) => r.label), PHASES.map(([, n]) => n), 'Median training step by phase');
}
