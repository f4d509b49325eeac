#!/usr/bin/env node
// First: V8 reads it at its first collection.
import '../util/heap.js';
import { availableParallelism } from 'node:os';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { WorkerError } from '../comm/group.js';
import { BACKENDS, type BackendChoice } from '../model/backend.js';
import { KERNEL_CHOICES, type KernelChoice } from '../model/provider.js';
import { errorMessage, Interrupted, UsageError } from '../util/errors.js';
import { reportTable } from '../report/compare-report.js';
import { runCompare, runReport } from './compare.js';
import { runDashboard } from './dashboard.js';
import { evaluateCheckpoint } from './evaluate.js';
import { generateText } from './generate.js';
import { inspect } from './inspect.js';
import { checkSingleValues, nonNegativeInt, nonNegativeNumber, parseWorkerList, positiveInt, positiveNumber, threadCount, timeoutSeconds } from './options.js';
import { runTrain } from './train.js';
import { readTokenFile } from '../comm/auth.js';
import { HEARTBEATS_PER_DEADLINE } from '../comm/remote.js';
import { runNode } from '../worker/node.js';

const log = (line: string) => console.log(line);

const dataOptions = {
  config: { type: 'string', describe: 'config file, or a shipped config name: gpt2-124m-verdict (default), tiny' },
  data: { type: 'string', describe: 'the-verdict.txt (else $VERDICT_PATH, the cache, or a download)' },
} as const;

const runtimeOptions = {
  workers: { type: 'number', default: availableParallelism(), describe: 'worker threads', coerce: threadCount('workers') },
  backend: { choices: BACKENDS, default: 'auto' as BackendChoice, describe: 'tfjs backend: auto takes tensorflow (tfjs-node) if installed, else wasm' },
  kernels: {
    choices: KERNEL_CHOICES, default: 'auto' as KernelChoice,
    describe: 'matrix products on wasm: blas (a system CBLAS such as OpenBLAS), native (our AVX-512/AVX2 GEMM), wasm (XNNPACK); auto: blas, else native, else wasm (native over an OpenBLAS held below AVX-512 where our GEMM runs AVX-512)',
  },
} as const;

/**
 * Number options must be given a value: yargs would read a bare `--threads` (last on the line,
 * or followed by another flag) as absent and quietly take the default.
 */
function valued<T extends Record<string, object>>(options: T): T {
  return Object.fromEntries(Object.entries(options).map(([k, o]) => [k, 'type' in o && o.type === 'number' ? { ...o, requiresArg: true } : o])) as T;
}

const checkpointOption = {
  checkpoint: { type: 'string', demandOption: true, describe: 'a run directory, or a .safetensors file (with --config)' },
} as const;

function trainOptions(y: Argv) {
  return y.options(valued({
    ...dataOptions,
    backend: runtimeOptions.backend,
    kernels: runtimeOptions.kernels,
    epochs: { type: 'number', describe: 'epochs (overrides the config; may extend a resumed run)', coerce: positiveInt('epochs') },
    'max-steps': { type: 'number', describe: 'stop after this many optimizer steps in all', coerce: positiveInt('max-steps') },
    lr: { type: 'number', describe: 'AdamW learning rate', coerce: positiveNumber('lr') },
    'weight-decay': { type: 'number', describe: 'AdamW decoupled weight decay', coerce: nonNegativeNumber('weight-decay') },
    'batch-size': { type: 'number', describe: 'global batch size (samples per step, split across workers)', coerce: positiveInt('batch-size') },
    seed: { type: 'number', describe: 'seed of weights, data order and dropout', coerce: nonNegativeInt('seed') },
    'eval-freq': { type: 'number', describe: 'evaluate every N steps', coerce: positiveInt('eval-freq') },
    'eval-iter': { type: 'number', describe: 'batches per evaluation', coerce: positiveInt('eval-iter') },
    out: { type: 'string', describe: 'run directory (default runs/<timestamp>)' },
    resume: { type: 'string', describe: 'continue the run in this directory from its checkpoint' },
    'init-from': { type: 'string', describe: 'start from these weights (.safetensors, reference PyTorch names)' },
    'checkpoint-every': { type: 'number', default: 50, describe: 'checkpoint every N steps (also at the end and on Ctrl-C)', coerce: positiveInt('checkpoint-every') },
    workers: { type: 'number', describe: 'worker threads in this process (default: the cores; 0 with --listen)', coerce: threadCount('workers', true) },
    force: { type: 'boolean', describe: 'accept a non-empty --out that holds no run; its files are kept' },
    listen: { type: 'string', group: 'Remote nodes:', describe: 'HOST:PORT where remote nodes join (HOST 0.0.0.0 for every interface)' },
    nodes: { type: 'number', group: 'Remote nodes:', describe: 'nodes to wait for before the first step', coerce: nonNegativeInt('nodes') },
    'token-file': { type: 'string', group: 'Remote nodes:', describe: 'the run\'s secret (default: generated into the run directory as "token")' },
    wire: { choices: ['fp32', 'bf16'] as const, group: 'Remote nodes:', describe: 'gradient format on the network; bf16 halves the bytes but is not exact (default fp32)' },
    'wait-timeout': { type: 'number', group: 'Remote nodes:', describe: 'seconds to wait for a node when no worker is left (default 600)', coerce: timeoutSeconds('wait-timeout') },
    'heartbeat-timeout': { type: 'number', group: 'Remote nodes:', describe: 'seconds of silence after which a node is lost (default 20)', coerce: timeoutSeconds('heartbeat-timeout', HEARTBEATS_PER_DEADLINE) },
    'tls-cert': { type: 'string', group: 'Remote nodes:', describe: 'serve wss:// with this PEM certificate (with --tls-key)' },
    'tls-key': { type: 'string', group: 'Remote nodes:', describe: 'the PEM private key of --tls-cert' },
    'checksum-every': { type: 'number', group: 'Remote nodes:', describe: 'compare the nodes\' weights with the coordinator\'s every N steps (0: never; default 10)', coerce: nonNegativeInt('checksum-every') },
    dashboard: { type: 'string', describe: 'serve a live dashboard of this run at [HOST:]PORT (HOST 127.0.0.1 unless given; beyond loopback it asks for the run\'s token)' },
    'piece-floats': { type: 'number', hidden: true, coerce: positiveInt('piece-floats') },
    fault: { type: 'string', hidden: true },
  }));
}

export function buildCli(argv: string[]) {
  return yargs(argv)
    .scriptName('gpt-ddp')
    .usage('$0 <command> [options]\n\nData-parallel GPT-2 pretraining on TensorFlow.js.')
    .command('train', 'train a GPT on The Verdict with a coordinator and worker threads', trainOptions, async (a) => {
      const run = await runTrain({
        config: a.config, data: a.data, out: a.out, backend: a.backend, kernels: a.kernels, workers: a.workers,
        maxSteps: a['max-steps'], epochs: a.epochs, lr: a.lr, weightDecay: a['weight-decay'], batchSize: a['batch-size'],
        seed: a.seed, evalFreq: a['eval-freq'], evalIter: a['eval-iter'], resume: a.resume, initFrom: a['init-from'],
        checkpointEvery: a['checkpoint-every'], fault: a.fault, listen: a.listen, nodes: a.nodes, tokenFile: a['token-file'],
        wire: a.wire, waitTimeout: a['wait-timeout'], heartbeatTimeout: a['heartbeat-timeout'], tlsCert: a['tls-cert'], tlsKey: a['tls-key'],
        checksumEvery: a['checksum-every'], pieceFloats: a['piece-floats'], force: a.force, dashboard: a.dashboard,
      }, log);
      if (run.interrupted) process.exitCode = 130;
    })
    .command('worker', 'join a training run as a remote node (the coordinator sends everything it needs)', (y) => y.options(valued({
      connect: { type: 'string', demandOption: true, describe: 'the coordinator: ws://HOST:PORT (or wss://)' },
      'token-file': { type: 'string', demandOption: true, describe: 'the run\'s token, copied from the coordinator\'s run directory' },
      threads: { type: 'number', default: availableParallelism(), describe: 'worker threads on this machine', coerce: threadCount('threads') },
      backend: runtimeOptions.backend,
      kernels: runtimeOptions.kernels,
      ca: { type: 'string', describe: 'PEM certificate to trust for wss:// (e.g. the coordinator\'s self-signed --tls-cert)' },
      rejoin: {
        type: 'number', default: 0, coerce: nonNegativeNumber('rejoin'),
        describe: 'seconds to keep trying to join while the coordinator is unreachable or lost (restarted with --resume on the same address, or not up yet); 0: exit at once',
      },
      fault: { type: 'string', hidden: true },
    })), async (a) => {
      process.exitCode = await runNode({
        connect: a.connect, token: readTokenFile(a['token-file']), threads: a.threads ?? availableParallelism(), backend: a.backend, kernels: a.kernels, ca: a.ca,
        rejoinSec: a.rejoin, fault: a.fault,
      }, log);
    })
    .command('evaluate', 'train and val loss of a checkpoint, as JSON', (y) => y.options(valued({
      ...checkpointOption, ...dataOptions, ...runtimeOptions,
      batches: { type: 'number', describe: 'batches per split (default: the config\'s evalIter)', coerce: positiveInt('batches') },
    })), async (a) => {
      log(JSON.stringify(await evaluateCheckpoint({
        checkpoint: a.checkpoint, config: a.config, data: a.data, batches: a.batches, workers: a.workers ?? availableParallelism(), backend: a.backend, kernels: a.kernels,
      })));
    })
    .command('generate', 'continue a prompt with a trained model', (y) => y.options(valued({
      ...checkpointOption,
      config: dataOptions.config,
      prompt: { type: 'string', demandOption: true, describe: 'text to continue' },
      'max-new-tokens': { type: 'number', default: 50, describe: 'tokens to generate', coerce: positiveInt('max-new-tokens') },
      temperature: { type: 'number', default: 0, describe: '0 = greedy; else sample from softmax(logits / T)', coerce: nonNegativeNumber('temperature') },
      'top-k': { type: 'number', default: 0, describe: 'sample only among the k most likely tokens (0 = all)', coerce: nonNegativeInt('top-k') },
      seed: { type: 'number', default: 123, describe: 'seed of the sampling', coerce: nonNegativeInt('seed') },
      backend: runtimeOptions.backend,
      kernels: runtimeOptions.kernels,
    })), async (a) => {
      log(await generateText({
        checkpoint: a.checkpoint, config: a.config, prompt: a.prompt, maxNewTokens: a['max-new-tokens'] ?? 50,
        temperature: a.temperature ?? 0, topK: a['top-k'] ?? 0, seed: a.seed ?? 123, backend: a.backend, kernels: a.kernels,
      }));
    })
    .command('compare', 'train the same run with each worker count; plots and a table', (y) => y.options(valued({
      ...dataOptions,
      workers: { type: 'string', default: '1,2', describe: 'comma-separated worker counts' },
      epochs: { type: 'number', describe: 'epochs (overrides the config)', coerce: positiveInt('epochs') },
      'max-steps': { type: 'number', describe: 'stop each run after this many steps', coerce: positiveInt('max-steps') },
      out: { type: 'string', describe: 'comparison directory (default runs/compare-<timestamp>)' },
      'target-loss': { type: 'number', default: 2.0, describe: 'train loss whose time-to-reach the table reports', coerce: positiveNumber('target-loss') },
      force: { type: 'boolean', default: false, describe: 'recompute the runs this comparison made in --out; accept a non-empty --out that holds no comparison (its files are kept)' },
      quick: { type: 'boolean', default: false, describe: 'the tiny config for 3 epochs (under half a minute)' },
      backend: runtimeOptions.backend,
      kernels: runtimeOptions.kernels,
    })), async (a) => {
      const report = await runCompare({
        workers: parseWorkerList(a.workers ?? '1,2'), config: a.config, epochs: a.epochs, maxSteps: a['max-steps'], out: a.out,
        data: a.data, backend: a.backend, kernels: a.kernels, targetLoss: a['target-loss'] ?? 2, force: a.force ?? false, quick: a.quick ?? false,
      }, log);
      log(reportTable(report));
    })
    .command('report <runs..>', 'draw the comparison report from existing run directories', (y) => y
      .positional('runs', { type: 'string', array: true, demandOption: true, describe: 'run directories' })
      .options(valued({
        out: { type: 'string', demandOption: true, describe: 'report directory' },
        'target-loss': { type: 'number', default: 2.0, describe: 'train loss whose time-to-reach the table reports', coerce: positiveNumber('target-loss') },
      })), async (a) => {
      log(reportTable(await runReport(a.runs as string[], a.out, a['target-loss'] ?? 2)));
    })
    .command('dashboard <runs..>', 'serve a live dashboard of run directories, finished or running, overlaid', (y) => y
      .positional('runs', { type: 'string', array: true, demandOption: true, describe: 'run directories' })
      .options(valued({
        host: { type: 'string', default: '127.0.0.1', describe: 'address to listen on (beyond loopback, --token-file is required)' },
        port: { type: 'number', default: 6006, describe: 'port (0: any free one)', coerce: nonNegativeInt('port') },
        'token-file': { type: 'string', describe: 'the secret a browser signs in with (required with a non-loopback --host)' },
      })), async (a) => {
      await runDashboard({ runs: a.runs as string[], host: a.host, port: a.port ?? 6006, tokenFile: a['token-file'] }, log);
    })
    .command('inspect', 'print model and data sizes as JSON', (y) => y.options(dataOptions), async (a) => {
      log(JSON.stringify(await inspect({ config: a.config, data: a.data })));
    })
    .demandCommand(1, 'name a command: train, worker, evaluate, generate, compare, report, dashboard or inspect')
    .strict()
    .check(checkSingleValues(['runs']))
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      // yargs reports its own validation and our coerce errors as YError: both are usage errors.
      if (err && err.name !== 'YError') throw err;
      const bare = /^Not enough arguments following: (.+)$/.exec(msg ?? '');
      throw new UsageError(bare ? `--${bare[1]} needs a value` : err?.message ?? msg);
    });
}

async function main(): Promise<void> {
  // A reader that goes away (`gpt-ddp train | head`) or a full disk under a redirect must not
  // stop the run: the console is best-effort, the run's files are its record.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
  try {
    await buildCli(hideBin(process.argv)).parseAsync();
  } catch (err) {
    console.error(`gpt-ddp: ${errorMessage(err).replace(/\s*\n\s*/g, ' ')}`);
    process.exitCode = err instanceof UsageError ? 2 : err instanceof Interrupted ? 130 : 1;
    if (!(err instanceof UsageError || err instanceof WorkerError || err instanceof Interrupted) && process.env.GPT_DDP_DEBUG && err instanceof Error) {
      console.error(err.stack);
    }
  }
}

await main();
