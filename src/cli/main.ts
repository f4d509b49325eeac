#!/usr/bin/env node
import { availableParallelism } from 'node:os';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { WorkerError } from '../comm/group.js';
import { BACKENDS, type BackendChoice } from '../model/backend.js';
import { errorMessage, UsageError } from '../util/errors.js';
import { DEFAULT_CONFIG } from './common.js';
import { inspect } from './inspect.js';
import { runTrain } from './train.js';

const log = (line: string) => console.log(line);

function positiveInt(name: string) {
  return (v: number | undefined) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new UsageError(`--${name} must be a positive integer, got ${v}`);
    return v;
  };
}

function nonNegativeInt(name: string) {
  return (v: number | undefined) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new UsageError(`--${name} must be a non-negative integer, got ${v}`);
    return v;
  };
}

function positiveNumber(name: string, allowZero = false) {
  return (v: number | undefined) => {
    if (v !== undefined && (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0))) {
      throw new UsageError(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${v}`);
    }
    return v;
  };
}

const configOption = {
  config: { type: 'string', default: DEFAULT_CONFIG, describe: 'config file, or a shipped config name (gpt2-124m-verdict, tiny)' },
  data: { type: 'string', describe: 'the-verdict.txt (else $VERDICT_PATH, the cache, or a download)' },
} as const;

function trainOptions(y: Argv) {
  return y.options({
    ...configOption,
    workers: { type: 'number', default: availableParallelism(), describe: 'worker threads', coerce: positiveInt('workers') },
    epochs: { type: 'number', describe: 'epochs (overrides the config)', coerce: positiveInt('epochs') },
    'max-steps': { type: 'number', describe: 'stop after this many optimizer steps', coerce: positiveInt('max-steps') },
    lr: { type: 'number', describe: 'AdamW learning rate', coerce: positiveNumber('lr') },
    'weight-decay': { type: 'number', describe: 'AdamW decoupled weight decay', coerce: positiveNumber('weight-decay', true) },
    'batch-size': { type: 'number', describe: 'global batch size (samples per step, split across workers)', coerce: positiveInt('batch-size') },
    seed: { type: 'number', describe: 'seed of weights, data order and dropout', coerce: nonNegativeInt('seed') },
    'eval-freq': { type: 'number', describe: 'evaluate every N steps', coerce: positiveInt('eval-freq') },
    'eval-iter': { type: 'number', describe: 'batches per evaluation', coerce: positiveInt('eval-iter') },
    out: { type: 'string', describe: 'run directory (default runs/<timestamp>)' },
    backend: { choices: BACKENDS, default: 'auto' as BackendChoice, describe: 'tfjs backend: auto takes tensorflow (tfjs-node) if installed, else wasm' },
    fault: { type: 'string', hidden: true },
  });
}

export function buildCli(argv: string[]) {
  return yargs(argv)
    .scriptName('gpt-ddp')
    .usage('$0 <command> [options]\n\nData-parallel GPT-2 pretraining on TensorFlow.js.')
    .command('train', 'train a GPT on The Verdict with a coordinator and worker threads', trainOptions, async (a) => {
      await runTrain({
        config: a.config, data: a.data, out: a.out, backend: a.backend, workers: a.workers ?? availableParallelism(),
        maxSteps: a['max-steps'], epochs: a.epochs, lr: a.lr, weightDecay: a['weight-decay'], batchSize: a['batch-size'],
        seed: a.seed, evalFreq: a['eval-freq'], evalIter: a['eval-iter'], fault: a.fault,
      }, log);
    })
    .command('inspect', 'print model and data sizes as JSON', (y) => y.options(configOption), async (a) => {
      log(JSON.stringify(await inspect({ config: a.config, data: a.data })));
    })
    .demandCommand(1, 'name a command: train or inspect')
    .strict()
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      // yargs reports its own validation and our coerce errors as YError: both are usage errors.
      if (err && err.name !== 'YError') throw err;
      throw new UsageError(err?.message ?? msg);
    });
}

async function main(): Promise<void> {
  try {
    await buildCli(hideBin(process.argv)).parseAsync();
  } catch (err) {
    console.error(`gpt-ddp: ${errorMessage(err).replace(/\s*\n\s*/g, " ")}`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
    if (!(err instanceof UsageError || err instanceof WorkerError) && err instanceof Error && process.env.GPT_DDP_DEBUG) {
      console.error(err.stack);
    }
  }
}

await main();
