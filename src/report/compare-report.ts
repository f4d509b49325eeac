import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatDuration } from '../coordinator/progress.js';
import { breakdownSpec, lossSpec } from './compare-plots.js';
import { writeChart } from './render.js';
import { compareRows, type RunData, type RunRow } from './runs.js';

export const PLOTS = ['loss-vs-time', 'loss-vs-tokens', 'step-breakdown'] as const;
/** Every file writeCompareReport writes. */
export const REPORT_FILES = ['compare.json', 'report.md', 'report.html', ...PLOTS.flatMap((p) => [`${p}.png`, `${p}.svg`])];

export interface CompareReport {
  targetLoss: number;
  config: string;
  parameters: number;
  rows: RunRow[];
  /** Pixel size of each PNG written. */
  plots: Record<string, { width: number; height: number }>;
}

const fmt = (v: number | null, digits: number) => (v === null ? 'n/a' : v.toFixed(digits));
const MB = 1e6;

function tableRows(r: RunRow): string[] {
  return [
    r.label, formatDuration(r.totalSec), `${r.medianStepSec.toFixed(2)} s`, r.tokensPerSec.toFixed(0), `${r.speedup.toFixed(2)}x`,
    `${(100 * r.efficiency).toFixed(0)}%`, r.timeToTargetSec === null ? 'not reached' : formatDuration(r.timeToTargetSec),
    fmt(r.finalTrainLoss, 3), fmt(r.finalValLoss, 3), `${(r.bytesPerStep / MB).toFixed(0)} MB`,
  ];
}

function header(target: number): string[] {
  return ['workers', 'total time', 'median step', 'tokens/s', 'speedup', 'efficiency', `time to train loss ${target}`,
    'final train loss', 'final val loss', 'bytes moved per step'];
}

/** The comparison table as Markdown. */
export function reportTable(report: CompareReport): string {
  const head = header(report.targetLoss);
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...report.rows.map((r) => `| ${tableRows(r).join(' | ')} |`)].join('\n');
}

/** Writes the plots, report.md, report.html and compare.json for a set of runs into `out`. */
export async function writeCompareReport(runs: RunData[], out: string, targetLoss: number): Promise<CompareReport> {
  const rows = compareRows(runs, targetLoss);
  const plots: CompareReport['plots'] = {};
  const specs = { 'loss-vs-time': lossSpec(runs, rows, 'time'), 'loss-vs-tokens': lossSpec(runs, rows, 'tokens'), 'step-breakdown': breakdownSpec(rows) };
  for (const name of PLOTS) {
    const chart = await writeChart(specs[name], join(out, name));
    plots[`${name}.png`] = { width: chart.width, height: chart.height };
  }
  const first = runs[0]!.summary;
  const report: CompareReport = { targetLoss, config: first.config, parameters: first.parameters, rows, plots };
  writeFileSync(join(out, 'compare.json'), `${JSON.stringify(report, null, 2)}\n`);

  const head = header(targetLoss);
  const table = reportTable(report);
  const intro = `Same seeded training (${first.config}, ${first.parameters.toLocaleString('en-US')} parameters, ${first.backend}) with each worker count. ` +
    'Speedup and efficiency are by median step time against the run with the fewest workers.';
  const md = [
    '# gpt-ddp: one versus several workers', '', intro, '',
    table, '',
    ...PLOTS.map((p) => `![${p}](${p}.png)`), '',
  ].join('\n');
  writeFileSync(join(out, 'report.md'), md);

  const svg = (p: string) => readFileSync(join(out, `${p}.svg`), 'utf8');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpt-ddp: one versus several workers</title>
<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>
</head><body><h1>gpt-ddp: one versus several workers</h1><p>${intro}</p>
<table><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr>
${rows.map((r) => `<tr>${tableRows(r).map((c) => `<td>${c}</td>`).join('')}</tr>`).join('\n')}</table>
${PLOTS.map((p) => `<figure>${svg(p)}</figure>`).join('\n')}
</body></html>
`;
  writeFileSync(join(out, 'report.html'), html);
  return report;
}
