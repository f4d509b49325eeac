import type { TopLevelSpec } from 'vega-lite';
import type { EvalRecord } from '../coordinator/metrics.js';

/**
 * The reference figure: training and validation loss against epochs, with tokens seen on a
 * second (top) x axis. Evaluations are spread evenly over the epochs run, as the reference does.
 */
export function lossPlotSpec(evals: EvalRecord[], epochs: number, title: string): TopLevelSpec {
  const n = evals.length;
  const rows = evals.flatMap((e, i) => {
    const epoch = n > 1 ? (epochs * i) / (n - 1) : 0;
    return [
      { epoch, tokens: e.tokensSeen, loss: e.trainLoss, series: 'Training loss' },
      { epoch, tokens: e.tokensSeen, loss: e.valLoss, series: 'Validation loss' },
    ];
  });
  const y = { field: 'loss', type: 'quantitative', title: 'Loss (cross-entropy, nats/token)' } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 560,
    height: 320,
    data: { values: rows },
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'epoch', type: 'quantitative', title: 'Epochs', axis: { orient: 'bottom' } },
          y,
          color: { field: 'series', type: 'nominal', title: null, scale: { range: ['#1f77b4', '#ff7f0e'] } },
          strokeDash: { field: 'series', type: 'nominal', title: null, scale: { range: [[1, 0], [6, 4]] } },
        },
      },
      {
        mark: { type: 'line', opacity: 0 },
        encoding: {
          x: { field: 'tokens', type: 'quantitative', title: 'Tokens seen', axis: { orient: 'top', format: '~s' } },
          y,
        },
      },
    ],
    resolve: { scale: { x: 'independent' } },
    config: { legend: { orient: 'top-right' }, font: 'DejaVu Sans' },
  };
}
