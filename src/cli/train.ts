import { randomBytes } from 'node:crypto';
import { basename, join, resolve } from 'node:path';
import { loadWeightsFile, saveCheckpoint } from '../checkpoint/checkpoint.js';
import { Cluster } from '../comm/cluster.js';
import type { MemberEvent, MemberInfo, MemberStep } from '../comm/group.js';
import type { StepRecord } from '../coordinator/metrics.js';
import { median } from '../math/stats.js';
import { ProgressBar } from '../coordinator/progress.js';
import { totalSteps, train, START, type TrainResult } from '../coordinator/trainer.js';
import type { BackendChoice } from '../model/backend.js';
import { resolveKernels, type KernelChoice } from '../model/provider.js';
import { initParams } from '../model/init.js';
import { GiB } from '../model/memory.js';
import { buildLayout } from '../model/layout.js';
import { lossPlotSpec } from '../report/loss-plot.js';
import { writeChart } from '../report/render.js';
import { Interrupted, UsageError } from '../util/errors.js';
import { isDirectory, writeFileAtomic } from '../util/files.js';
import { DEFAULT_CONFIG, loadConfig, loadRunText, prepareOutDir, resolveConfigPath, type RunText, type TrainingOverrides } from './common.js';
import { CHECKSUM_EVERY, checkListenArgs, startListening, type ListenArgs } from './listen.js';
import { checkRunFits, localThreads } from './run-checks.js';
import { scriptFiles } from '../dashboard/assets.js';
import { dashboardForRun, parseDashboardAddress } from './dashboard.js';
import { resumeRun, type RunSetup } from './resume.js';
import { lockRunDir } from '../util/run-lock.js';
import { onStopSignal } from '../util/signals.js';

export interface TrainArgs extends TrainingOverrides, ListenArgs {
  config?: string;
  data?: string;
  /** The text of `data` already read and tokenized (compare prepares it once for all its runs). */
  prepared?: RunText;
  out?: string;
  backend: BackendChoice;
  /** Matmul provider (default auto). */
  kernels?: KernelChoice;
  /** Worker threads in this process (default: the cores, or 0 with --listen). */
  workers?: number;
  maxSteps?: number;
  /** Continue the run in this directory from its checkpoint. */
  resume?: string;
  /** Start from these weights (a safetensors file with the reference model's names). */
  initFrom?: string;
  checkpointEvery?: number;
  /** Accept a non-empty --out that holds no run (its files are kept). */
  force?: boolean;
  /** Serve a live dashboard of the run at [HOST:]PORT. */
  dashboard?: string;
  /** Test hook passed to the worker threads (see worker/thread.ts). */
  fault?: string;
}

export interface TrainRun extends TrainResult {
  outDir: string;
  backend: string;
}


/** Everything a run needs, validated before any thread starts: a new run or a resumed one. */
async function setUp(args: TrainArgs): Promise<RunSetup> {
  checkListenArgs(args);
  if (args.dashboard !== undefined) {
    parseDashboardAddress(args.dashboard);
    scriptFiles(); // a missing web build is refused before the run directory exists
  }
  if (args.workers === 0 && !args.listen) throw new UsageError('--workers 0 needs --listen (remote nodes to do the work)');
  // A provider that cannot run is refused before anything is created (local workers only).
  if (localThreads(args) > 0) resolveKernels(args.kernels ?? 'auto');
  const { epochs, lr, weightDecay, batchSize, seed, evalFreq, evalIter } = args;
  if (args.resume) return resumeRun({ ...args, resume: args.resume });
  const configName = resolveConfigPath(args.config ?? DEFAULT_CONFIG);
  const config = loadConfig(configName, { epochs, lr, weightDecay, batchSize, seed, evalFreq, evalIter });
  checkRunFits(config, args);
  const { source, data, fingerprint } = await loadRunText(args.data, config, args.prepared);
  const layout = buildLayout(config.model);
  const weights = args.initFrom ? loadWeightsFile(layout, args.initFrom) : initParams(layout, config.training.seed);
  const runId = randomBytes(16).toString('hex');
  // Last: from here on the run holds its directory's lock.
  const out = prepareOutDir(args.out, args.force);
  return {
    config, configName, source, data, fingerprint, runId,
    initFrom: args.initFrom ? resolve(args.initFrom) : null, layout, outDir: out.dir, lock: out.lock, weights, start: START,
  };
}

/** One line per membership change, as the coordinator's log shows it. */
function describeEvent(e: MemberEvent): string {
  const who = `node ${e.member} (${e.host})`;
  switch (e.event) {
    case 'start':
      return `local threads: ${e.threads}, backend ${e.backend}, kernels: ${e.kernels}`;
    case 'join':
      return `${who} joined: ${e.threads} thread${e.threads === 1 ? '' : 's'}, backend ${e.backend}, kernels: ${e.kernels}; it can work from step ${e.step}`;
    case 'leave':
      return `${who} left at step ${e.step}: ${e.reason}`;
    case 'lost':
      return `${who} lost at step ${e.step}: ${e.reason}`;
    case 'diverged':
      return `${who} dropped: ${e.reason}`;
    case 'reassign':
      return `step ${e.step}: slot${e.slots!.length === 1 ? '' : 's'} ${e.slots!.join(', ')} recomputed on ${e.member === 0 ? 'the local threads' : who}`;
    case 'waiting':
      return `step ${e.step}: ${e.reason} (checkpoint saved)`;
  }
}

/** Per member: what it is and its median share of a step (only when nodes took part). */
function memberLines(members: MemberInfo[], steps: StepRecord[]): string[] {
  if (!members.some((m) => m.kind === 'node')) return [];
  const MB = 1e6;
  return members.map((m) => {
    const mine = steps.flatMap((s) => s.members.filter((x) => x.member === m.id && x.slots.length > 0));
    const med = (f: (x: MemberStep) => number) => median(mine.map(f));
    const name = m.kind === 'local' ? 'local threads' : `node ${m.id} ${m.host}`;
    // A member that joined with every slot taken waits as a spare (it takes over a lost member's slots).
    if (mine.length === 0) return `${name}: ${m.threads} thread${m.threads === 1 ? '' : 's'}, ${m.backend}; no slots in any step (a spare)`;
    return `${name}: ${m.threads} thread${m.threads === 1 ? '' : 's'}, ${m.backend}; median per step: compute ${med((x) => x.computeSec).toFixed(2)} s, ` +
      `wait ${med((x) => x.waitSec).toFixed(2)} s` + (m.kind === 'node' ? `, sent ${(med((x) => x.sentBytes) / MB).toFixed(1)} MB, received ${(med((x) => x.receivedBytes) / MB).toFixed(1)} MB` : '');
  });
}

/** `gpt-ddp train`: validates everything, locks the run directory, then trains with a coordinator and its workers. */
export async function runTrain(args: TrainArgs, log: (line: string) => void): Promise<TrainRun> {
  // A run being resumed is locked before its checkpoint is read; a new one as its directory is prepared.
  let lock = args.resume && isDirectory(args.resume) ? lockRunDir(args.resume) : null;
  try {
    const run = await setUp(args);
    lock ??= run.lock ?? null;
    return await trainRun(run, args, log);
  } finally {
    lock?.release();
  }
}

async function trainRun(run: RunSetup, args: TrainArgs, log: (line: string) => void): Promise<TrainRun> {
  const { config, layout, data, outDir } = run;
  const tc = config.training;
  const total = totalSteps(config, data.train.size, args.maxSteps ?? null);
  const dashboard = args.dashboard === undefined ? null
    : await dashboardForRun(args.dashboard, { dir: outDir, label: basename(resolve(outDir)), totalSteps: total }, args.tokenFile, log);
  // From here Ctrl-C stops the run cleanly: the nodes are told, and a run under way checkpoints.
  const stop = new AbortController();
  let starting = true;
  let stopRequested = false;
  const stopListening = onStopSignal(() => {
    stopRequested = true;
    stop.abort();
    log(starting ? 'stopping before the first step (press Ctrl-C again to abort now)' : 'stopping after the current step, then saving a checkpoint (press Ctrl-C again to abort now)');
  });
  let server: Awaited<ReturnType<typeof startListening>> | undefined;
  try {
    server = args.listen ? await startListening(args, layout, outDir, localThreads(args), log) : undefined;
  } catch (err) {
    stopListening();
    // An open dashboard would keep the process from exiting.
    await dashboard?.close();
    throw err;
  }
  const group = new Cluster({
    layout, backend: args.backend, kernels: args.kernels ?? 'auto', localWorkers: localThreads(args), slots: run.slots, maxSlots: tc.batchSize,
    server, nodes: args.nodes, wire: args.wire, pieceFloats: args.pieceFloats, waitTimeoutSec: args.waitTimeout,
    checksumEvery: args.checksumEvery ?? CHECKSUM_EVERY, fault: args.fault ?? null, stop: stop.signal,
  });
  group.onEvent((e) => {
    if (starting) log(describeEvent(e));
  });

  let reason = 'the run ended';
  try {
    const backend = await group.start({ weights: run.weights, moments: run.moments, version: run.start.step });
    starting = false;
    const backends = new Set(group.members().map((m) => m.backend));
    if (backends.size > 1) log(`warning: the workers run different backends (${[...backends].join(', ')}): placements then differ in the last bits`);
    const kernels = new Set(group.members().map((m) => m.kernels));
    if (kernels.size > 1) log(`warning: the workers run different kernels (${[...kernels].join('; ')}): placements then differ in the last bits`);
    const stepsPerEpoch = Math.floor(data.train.size / tc.batchSize);
    log(`gpt-ddp: ${run.configName}, ${layout.totalSize.toLocaleString('en-US')} parameters, backend ${backend}, ${group.description()}; kernels: ${[...kernels].join('; ')}`);
    log(`data: ${run.source.origin}: ${data.characters} characters, ${data.trainTokens.length} train / ${data.valTokens.length} val tokens, ` +
      `${stepsPerEpoch} steps of ${tc.batchSize} x ${config.model.contextLength} tokens per epoch, ${tc.epochs} epochs`);
    log(`output: ${outDir}`);
    writeFileAtomic(join(outDir, 'config.json'), [Buffer.from(`${JSON.stringify(config, null, 2)}\n`)]);

    const progress = new ProgressBar(total);
    const say = (line: string) => {
      progress.clear();
      log(line);
    };
    const result = await train({
      config, data, group, outDir, start: run.start, maxSteps: args.maxSteps ?? null,
      on: {
        step: (r, done, steps) => {
          const runSec = r.elapsedSec - run.start.elapsedSec;
          progress.update(r.step + 1, { loss: r.loss.toFixed(3), 'tok/s': ((r.tokensSeen - run.start.tokensSeen) / runSec).toFixed(0) },
            (runSec / done) * (steps - done));
        },
        eval: (r) => say(`Ep ${r.epoch} (Step ${String(r.step).padStart(6, '0')}): Train loss ${r.trainLoss.toFixed(3)}, Val loss ${r.valLoss.toFixed(3)}`),
        sample: (r) => say(r.text),
        member: (r) => say(describeEvent(r)),
        notice: say,
      },
      shouldStop: () => stopRequested,
      checkpointEvery: args.checkpointEvery,
      checkpoint: (at) => saveCheckpoint(outDir, layout, group.weights, group.moments, {
        ...at, runId: run.runId, seed: tc.seed, config, backend, dataCharacters: data.characters, dataFingerprint: run.fingerprint,
        slots: group.slots, initFrom: run.initFrom,
      }),
    });
    progress.clear();
    if (result.interrupted) reason = `the coordinator was stopped at step ${result.steps}; it can be resumed`;

    for (const line of memberLines(group.members(), result.metrics.of('step'))) log(line);
    const evals = result.metrics.of('eval');
    const title = `${layout.totalSize.toLocaleString('en-US')}-parameter GPT on The Verdict (${group.description()})`;
    if (evals.length > 0) await writeChart(lossPlotSpec(evals, result.steps / stepsPerEpoch, title), join(outDir, 'loss'));
    const last = evals.at(-1);
    const summary = {
      config: run.configName, parameters: layout.totalSize, backend, workers: group.slots, placement: group.description(),
      members: group.members(), steps: result.steps, epochs: result.steps / stepsPerEpoch, tokensSeen: result.tokensSeen,
      totalSec: result.totalSec, medianStepSec: result.medianStepSec, peakHeapBytes: result.peakHeapBytes,
      finalTrainLoss: last?.trainLoss ?? null, finalValLoss: last?.valLoss ?? null,
      minValLoss: evals.length ? Math.min(...evals.map((e) => e.valLoss)) : null,
      interrupted: result.interrupted,
    };
    writeFileAtomic(join(outDir, 'summary.json'), [Buffer.from(`${JSON.stringify(summary, null, 2)}\n`)]);
    log(`${result.interrupted ? 'stopped' : 'done'}: ${result.steps} steps in ${result.totalSec.toFixed(1)} s, median step ${result.medianStepSec.toFixed(2)} s, ` +
      `peak wasm heap ${(result.peakHeapBytes / GiB).toFixed(2)} GiB; checkpoint and outputs in ${outDir}` +
      (result.interrupted ? `; continue with --resume ${outDir}` : ''));
    return { ...result, outDir, backend };
  } catch (err) {
    reason = `the coordinator failed: ${(err as Error).message}`;
    if (stopRequested) {
      reason = 'the coordinator was stopped';
      if (starting) {
        throw new Interrupted(run.start.step > 0
          ? `stopped before its first step here; the checkpoint of step ${run.start.step} is kept: continue with --resume ${outDir}`
          : `stopped before the first step; nothing to resume: start again with --out ${outDir} --force, or another --out`);
      }
      throw new Interrupted(`stopped: ${(err as Error).message}${server ? '; the last checkpoint is kept' : ''}`);
    }
    throw err;
  } finally {
    stopListening();
    await group.close(reason);
    await dashboard?.close();
  }
}
