import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { EvalRecord, MetricRecord, StepRecord } from '../coordinator/metrics.js';
import { median } from '../math/stats.js';
import { UsageError } from '../util/errors.js';
import { PHASES, type Phase } from './specs.js';

/** What a finished run directory says about itself (summary.json and metrics.jsonl). */
export interface RunData {
  dir: string;
  summary: RunSummary;
  steps: StepRecord[];
  evals: EvalRecord[];
}

export interface RunSummary {
  config: string;
  parameters: number;
  backend: string;
  workers: number;
  /** e.g. "2 nodes (4 threads), 4 slots per step" (runs before remote nodes existed lack it). */
  placement?: string;
  steps: number;
  epochs: number;
  tokensSeen: number;
  totalSec: number;
  medianStepSec: number;
  interrupted: boolean;
}

/** The summary fields a report reads, with their types. */
const SUMMARY_FIELDS: Array<[keyof RunSummary, string]> = [
  ['config', 'string'], ['parameters', 'number'], ['backend', 'string'], ['workers', 'number'], ['steps', 'number'], ['totalSec', 'number'], ['interrupted', 'boolean'],
];

function readJson(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${path} is not valid JSON (${(err as Error).message})`);
  }
}

const notFinished = (dir: string, file: string) => new UsageError(`${dir} is not a finished run: it has no ${file}`);

/** A run directory's summary.json, checked to hold the fields a report reads. */
export function readSummary(dir: string): RunSummary {
  const path = join(dir, 'summary.json');
  if (!existsSync(path)) throw notFinished(dir, 'summary.json');
  const summary = readJson(path, readFileSync(path, 'utf8')) as Record<string, unknown> | null;
  const wrong = SUMMARY_FIELDS.find(([key, type]) => typeof summary?.[key] !== type);
  if (wrong) throw new UsageError(`${path}: "${wrong[0]}" is missing or not a ${wrong[1]}`);
  return summary as unknown as RunSummary;
}

/** A run directory's summary and metrics, checked to hold what a report needs. */
export function readRun(dir: string): RunData {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${dir} is not a run directory`);
  const summary = readSummary(dir);
  const metricsPath = join(dir, 'metrics.jsonl');
  if (!existsSync(metricsPath)) throw notFinished(dir, 'metrics.jsonl');
  const records = readFileSync(metricsPath, 'utf8').split('\n')
    .flatMap((l, i) => (l.trim() ? [readJson(`${metricsPath} line ${i + 1}`, l) as MetricRecord | null] : []));
  const steps = records.filter((r): r is StepRecord => r?.type === 'step');
  if (steps.length === 0) throw new UsageError(`${metricsPath} holds no step record`);
  return { dir, summary, steps, evals: records.filter((r): r is EvalRecord => r?.type === 'eval') };
}

/** One row of the comparison table. */
export interface RunRow {
  label: string;
  dir: string;
  workers: number;
  steps: number;
  totalSec: number;
  medianStepSec: number;
  tokensPerSec: number;
  /** Against the baseline run (1 worker if present), by median step time. */
  speedup: number;
  efficiency: number;
  /** Wall-clock seconds until an evaluation's train loss first reached the target; null if never. */
  timeToTargetSec: number | null;
  finalTrainLoss: number | null;
  finalValLoss: number | null;
  bytesPerStep: number;
  phases: Record<Phase, number>;
}

/** The comparison table; the baseline is the run with the fewest workers. */
export function compareRows(runs: RunData[], targetLoss: number): RunRow[] {
  const sorted = [...runs].sort((a, b) => a.summary.workers - b.summary.workers);
  const base = sorted[0]!;
  const baseStep = median(base.steps.map((s) => s.stepSec));
  const counts = new Map<number, number>();
  for (const r of sorted) counts.set(r.summary.workers, (counts.get(r.summary.workers) ?? 0) + 1);
  return sorted.map((run) => {
    const stepSec = median(run.steps.map((s) => s.stepSec));
    const speedup = baseStep / stepSec;
    const reached = run.evals.find((e) => e.trainLoss <= targetLoss);
    const last = run.evals.at(-1);
    const lastStep = run.steps.at(-1);
    const nodes = /^(.*node.*), \d+ slots? per step$/.exec(run.summary.placement ?? '')?.[1];
    return {
      label: `${run.summary.workers} worker${run.summary.workers === 1 ? '' : 's'}${nodes ? ` on ${nodes}` : ''}${counts.get(run.summary.workers)! > 1 ? ` (${basename(run.dir)})` : ''}` +
        (run.summary.interrupted ? `, interrupted at step ${run.summary.steps}` : ''),
      dir: run.dir,
      workers: run.summary.workers,
      steps: run.steps.length,
      totalSec: run.summary.totalSec,
      medianStepSec: stepSec,
      tokensPerSec: (lastStep?.tokensSeen ?? 0) / run.steps.reduce((s, r) => s + r.stepSec, 0),
      speedup,
      efficiency: speedup / (run.summary.workers / base.summary.workers),
      timeToTargetSec: reached?.elapsedSec ?? null,
      finalTrainLoss: last?.trainLoss ?? null,
      finalValLoss: last?.valLoss ?? null,
      bytesPerStep: median(run.steps.map((s) => s.bytesMoved)),
      phases: Object.fromEntries(PHASES.map(([k]) => [k, median(run.steps.map((s) => s[k]))])) as Record<Phase, number>,
    };
  });
}
