import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { readTrainerState, TRAINER_FILE } from '../checkpoint/checkpoint.js';
import type { BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import { REPORT_FILES, writeCompareReport, type CompareReport } from '../report/compare-report.js';
import { readRun, readSummary, type RunData, type RunSummary } from '../report/runs.js';
import { Interrupted, UsageError } from '../util/errors.js';
import { onStopSignal } from '../util/signals.js';
import { DEFAULT_CONFIG, loadConfig, loadRunText, resolveConfigPath, timestamp } from './common.js';
import { prepareOutputDir } from './out-dir.js';
import { checkRunFits } from './run-checks.js';
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
  /** Recompute the runs this comparison made; accept a non-empty --out that holds no comparison. */
  force: boolean;
  quick: boolean;
}

/** `--quick`: the tiny model for 3 epochs, under half a minute for 1 and 2 workers here. */
const QUICK = { config: 'tiny', epochs: 3 };
const SETTINGS_FILE = 'compare-settings.json';

type Plan = 'reuse' | 'resume' | 'start';

/** What to do with one run's directory; decided for every run before any starts. */
function planRun(dir: string, settings: string, fingerprint: string, force: boolean): Plan {
  const settingsPath = join(dir, SETTINGS_FILE);
  if (!existsSync(settingsPath)) {
    if (existsSync(dir) && (!statSync(dir).isDirectory() || readdirSync(dir).length > 0)) {
      throw new UsageError(`${dir} exists but was not made by compare; move it away or choose another --out`);
    }
    return 'start';
  }
  if (force) return 'start';
  const previous = readFileSync(settingsPath, 'utf8');
  if (previous !== settings) throw new UsageError(`${dir} was run with other settings (${previous}); pass --force to recompute`);
  const checkpointed = existsSync(join(dir, TRAINER_FILE));
  const trainedOn = checkpointed ? readTrainerState(dir).dataFingerprint : null;
  if (trainedOn !== null && trainedOn !== fingerprint) throw new UsageError(`${dir} was trained on other data than --data gives now; pass --force to recompute`);
  // The summary alone: a run stopped before its first step has one but no step record.
  if (existsSync(join(dir, 'summary.json')) && !summaryOf(dir).interrupted) return 'reuse';
  return checkpointed ? 'resume' : 'start';
}

function summaryOf(dir: string): RunSummary {
  try {
    return readSummary(dir);
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(`${err.message}; pass --force to recompute`);
    throw err;
  }
}

/** Ctrl-C or SIGTERM: the current run stops as train stops, and no later run starts. */
function watchSignals(): { readonly stopped: boolean; close(): void } {
  let stopped = false;
  const close = onStopSignal(() => {
    stopped = true;
  });
  return {
    get stopped() {
      return stopped;
    },
    close,
  };
}

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
  const runConfig = loadConfig(config, { epochs });
  // Every run's fit: a thread's share of the batch, and so its heap, is largest with the fewest workers.
  for (const workers of args.workers) checkRunFits(runConfig, { workers, backend: args.backend });
  // Read and tokenized once: every run takes it from here.
  const prepared = await loadRunText(args.data, runConfig);
  const settings = JSON.stringify({ config, epochs: epochs ?? null, maxSteps: args.maxSteps ?? null });
  const out = args.out ?? join('runs', `compare-${timestamp()}`);
  const dirs = args.workers.map((workers) => join(out, `workers-${workers}`));
  const plans = dirs.map((dir) => planRun(dir, settings, prepared.fingerprint, args.force));
  const own = existsSync(join(out, 'compare.json')) || dirs.some((dir) => existsSync(join(dir, SETTINGS_FILE)));
  prepareOutputDir(out, { flag: '--out', kind: 'comparison', own, outputs: [...REPORT_FILES, ...dirs.map((d) => basename(d))], force: args.force });
  // A report of earlier runs must not stand beside runs that are being recomputed.
  if (plans.some((p) => p !== 'reuse')) for (const file of REPORT_FILES) rmSync(join(out, file), { force: true });

  const signals = watchSignals();
  const runs: RunData[] = [];
  try {
    for (const [i, workers] of args.workers.entries()) {
      const dir = dirs[i]!;
      const tag = `[run ${i + 1}/${args.workers.length}, ${workers} worker${workers === 1 ? '' : 's'}]`;
      const say = (line: string) => log(`${tag} ${line}`);
      if (signals.stopped) throw new Interrupted(`stopped before ${tag}; run the same command again to continue the comparison`);
      const common = { workers, epochs, maxSteps: args.maxSteps, data: args.data, prepared, backend: args.backend, kernels: args.kernels };
      if (plans[i] === 'reuse') {
        say(`reusing the finished run in ${dir}`);
      } else {
        if (plans[i] === 'resume') {
          say(`resuming ${dir}`);
        } else {
          rmSync(dir, { recursive: true, force: true });
          mkdirSync(dir, { recursive: true });
          writeFileSync(join(dir, SETTINGS_FILE), settings);
          say('starting');
        }
        const run = await runTrain(plans[i] === 'resume' ? { resume: dir, ...common } : { config, out: dir, force: true, ...common }, say);
        if (run.interrupted || signals.stopped) {
          throw new Interrupted(`stopped during ${tag}; its checkpoint is in ${dir}: run the same command again to continue the comparison`);
        }
      }
      runs.push(readRun(dir));
    }
  } finally {
    signals.close();
  }
  const report = await writeCompareReport(runs, out, args.targetLoss);
  log(`comparison written to ${out}: report.md, report.html, compare.json and the plots`);
  return report;
}

/** `gpt-ddp report`: the same report from existing run directories, all checked before anything is written. */
export async function runReport(dirs: string[], out: string, targetLoss: number): Promise<CompareReport> {
  const runs = dirs.map(readRun);
  prepareOutputDir(out, { flag: '--out', kind: 'report', own: existsSync(join(out, 'compare.json')), outputs: REPORT_FILES });
  return writeCompareReport(runs, out, targetLoss);
}
