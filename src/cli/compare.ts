import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRAINER_FILE } from '../checkpoint/checkpoint.js';
import type { BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import { writeCompareReport, type CompareReport } from '../report/compare-report.js';
import { readRun, type RunData } from '../report/runs.js';
import { UsageError } from '../util/errors.js';
import { DEFAULT_CONFIG, resolveConfigPath } from './common.js';
import { runTrain } from './train.js';

export interface CompareArgs {
  workers: number[];
  config?: string;
  epochs?: number;
  maxSteps?: number;
  out?: string;
  data?: string;
  backend: BackendChoice;
  /** Matmul provider (default auto). */
  kernels?: KernelChoice;
  targetLoss: number;
  force: boolean;
  quick: boolean;
}

/** `--quick`: the tiny model for 3 epochs, about two minutes for 1 and 2 workers here. */
const QUICK = { config: 'tiny', epochs: 3 };
const SETTINGS_FILE = 'compare-settings.json';

/**
 * Runs the same seeded training once per worker count into OUT/workers-N, reusing finished runs
 * with the same settings and resuming interrupted ones, then writes the comparison report.
 */
export async function runCompare(args: CompareArgs, log: (line: string) => void): Promise<CompareReport> {
  if (args.workers.length === 0 || new Set(args.workers).size !== args.workers.length) {
    throw new UsageError(`--workers must list distinct worker counts, got ${args.workers.join(',')}`);
  }
  const config = resolveConfigPath(args.config ?? (args.quick ? QUICK.config : DEFAULT_CONFIG));
  const epochs = args.epochs ?? (args.quick ? QUICK.epochs : undefined);
  const settings = JSON.stringify({ config, epochs: epochs ?? null, maxSteps: args.maxSteps ?? null });
  const out = args.out ?? join('runs', `compare-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(out, { recursive: true });

  const runs: RunData[] = [];
  for (const [i, workers] of args.workers.entries()) {
    const dir = join(out, `workers-${workers}`);
    const tag = `[run ${i + 1}/${args.workers.length}, ${workers} worker${workers === 1 ? '' : 's'}]`;
    const say = (line: string) => log(`${tag} ${line}`);
    const settingsPath = join(dir, SETTINGS_FILE);
    if (args.force) rmSync(dir, { recursive: true, force: true });
    if (existsSync(settingsPath) && readFileSync(settingsPath, 'utf8') !== settings) {
      throw new UsageError(`${dir} was run with other settings (${readFileSync(settingsPath, 'utf8')}); pass --force to recompute`);
    }
    const finished = existsSync(join(dir, 'summary.json')) && !readRun(dir).summary.interrupted && existsSync(settingsPath);
    if (finished) {
      say(`reusing the finished run in ${dir}`);
    } else if (existsSync(join(dir, TRAINER_FILE)) && existsSync(settingsPath)) {
      say(`resuming ${dir}`);
      await runTrain({ resume: dir, workers, epochs, maxSteps: args.maxSteps, data: args.data, backend: args.backend, kernels: args.kernels }, say);
    } else {
      if (existsSync(dir) && readdirSync(dir).length > 0 && !existsSync(settingsPath)) {
        throw new UsageError(`${dir} exists but was not made by compare; pass --force to replace it, or another --out`);
      }
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      writeFileSync(settingsPath, settings);
      say('starting');
      await runTrain({ config, out: dir, workers, epochs, maxSteps: args.maxSteps, data: args.data, backend: args.backend, kernels: args.kernels }, say);
    }
    runs.push(readRun(dir));
  }
  const report = await writeCompareReport(runs, out, args.targetLoss);
  log(`comparison written to ${out}: report.md, report.html, compare.json and the plots`);
  return report;
}

/** `gpt-ddp report`: the same report from existing run directories. */
export async function runReport(dirs: string[], out: string, targetLoss: number): Promise<CompareReport> {
  const runs = dirs.map(readRun);
  mkdirSync(out, { recursive: true });
  return writeCompareReport(runs, out, targetLoss);
}
