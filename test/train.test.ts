import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runTrain, type TrainArgs, type TrainRun } from '../src/cli/train.js';
import type { EvalRecord, MetricRecord, StepRecord } from '../src/coordinator/metrics.js';
import { CLI, maxRelativeDifference, VERDICT, scratchDir } from './helpers.js';

const tmp = () => scratchDir('train');
const quiet = () => {};

function tiny(extra: Partial<TrainArgs>): Promise<TrainRun> {
  return runTrain({ config: 'tiny', data: VERDICT, out: join(tmp(), 'run'), backend: 'wasm', workers: 1, ...extra }, quiet);
}

function records(run: TrainRun): MetricRecord[] {
  return readFileSync(join(run.outDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricRecord);
}
const evalsOf = (run: TrainRun) => records(run).filter((r): r is EvalRecord => r.type === 'eval');
const stepsOf = (run: TrainRun) => records(run).filter((r): r is StepRecord => r.type === 'step');

test('a tiny run learns: training loss falls and every output is written', async () => {
  const lines: string[] = [];
  const run = await runTrain({
    config: 'tiny', data: VERDICT, out: join(tmp(), 'run'), backend: 'wasm', workers: 1, maxSteps: 30, lr: 0.003, evalFreq: 10,
  }, (l) => lines.push(l));
  const evals = evalsOf(run);
  assert.deepEqual(evals.map((e) => e.step), [0, 10, 20]);
  assert.ok(evals[2]!.trainLoss < evals[0]!.trainLoss - 1, `train loss ${evals.map((e) => e.trainLoss)}`);
  assert.ok(lines.some((l) => /^Ep 1 \(Step 000010\): Train loss \d+\.\d{3}, Val loss \d+\.\d{3}$/.test(l)), lines.join('\n'));
  assert.ok(lines[0]!.includes('backend wasm, 1 worker thread'), lines[0]);
  for (const f of ['metrics.jsonl', 'samples.txt', 'loss.png', 'loss.svg', 'summary.json', 'config.json']) {
    assert.ok(existsSync(join(run.outDir, f)), f);
  }
  assert.equal(readFileSync(join(run.outDir, 'loss.png')).subarray(1, 4).toString(), 'PNG');
  const summary = JSON.parse(readFileSync(join(run.outDir, 'summary.json'), 'utf8')) as Record<string, number>;
  assert.equal(summary.steps, 30);
  assert.equal(summary.tokensSeen, 30 * 2 * 32);
  const step = stepsOf(run)[3]!;
  assert.equal(step.tokensSeen, 4 * 64);
  assert.ok(Number.isFinite(step.loss));
});

test('1, 2 and 3 workers compute the same run (dropout on); uneven shards too', async () => {
  const args = { maxSteps: 6, evalFreq: 5, batchSize: 3 };
  const one = await tiny({ ...args, workers: 1 });
  for (const workers of [2, 3]) {
    const many = await tiny({ ...args, workers });
    assert.ok(maxRelativeDifference(one.weights, many.weights) <= 1e-5, `${workers} workers: weights differ`);
    evalsOf(one).forEach((e, i) => {
      const o = evalsOf(many)[i]!;
      assert.ok(Math.abs(e.trainLoss - o.trainLoss) <= 1e-5 * e.trainLoss && Math.abs(e.valLoss - o.valLoss) <= 1e-5 * e.valLoss,
        `${workers} workers, eval ${i}: ${JSON.stringify([e, o])}`);
    });
    assert.deepEqual(stepsOf(many).map((s) => s.workers), Array(6).fill(workers));
  }
  const even = await tiny({ maxSteps: 5, evalFreq: 5, workers: 2 });
  const single = await tiny({ maxSteps: 5, evalFreq: 5, workers: 1 });
  assert.ok(maxRelativeDifference(single.weights, even.weights) <= 1e-5);
  assert.ok(maxRelativeDifference(single.weights, one.weights) > 1e-4, 'a different batch size changes the run');
});

test('step records carry the timing breakdown; memory stays flat over 50 steps', async () => {
  const run = await tiny({ maxSteps: 50, evalFreq: 10, workers: 2 });
  const steps = stepsOf(run);
  assert.equal(steps.length, 50);
  steps.forEach((s, i) => {
    assert.equal(s.workerComputeSec.length, 2);
    assert.ok(s.workerComputeSec.every((c) => c > 0 && c <= s.stepSec), 'each worker computed within the step');
    for (const k of ['computeSec', 'waitSec', 'reduceSec', 'optimizerSec', 'publishSec'] as const) assert.ok(s[k] >= 0, k);
    // The step's own clock against the run's: a step cannot take longer than the time between records.
    if (i > 0) assert.ok(s.stepSec <= s.elapsedSec - steps[i - 1]!.elapsedSec + 1e-3, `step ${i} is longer than the time it took`);
    assert.ok(s.optimizerSec > 0, 'the optimizer ran');
    assert.deepEqual(s.members.map((m) => [m.member, m.slots.sort()]), [[0, [0, 1]]]);
  });
  const tensors = new Set(steps.map((s) => s.liveTensors));
  assert.equal(tensors.size, 1, `live tensors vary: ${[...tensors]}`);
  const heap = steps.slice(5).map((s) => s.heapBytes);
  assert.ok(heap[0]! > 0);
  assert.equal(Math.max(...heap), Math.min(...heap), 'wasm heap grows after warm-up');
});

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, VERDICT_PATH: VERDICT } });
}

test('a worker that throws or dies ends the run with one error naming it and the step', () => {
  for (const fault of ['throw@2', 'exit@2']) {
    const out = join(tmp(), 'run');
    const r = cli(['train', '--config', 'tiny', '--workers', '2', '--max-steps', '5', '--out', out, '--fault', fault]);
    assert.equal(r.status, 1, `${fault}: ${r.stderr}`);
    assert.match(r.stderr, /worker 1 failed during step 2/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
    assert.equal(steps.filter((l) => l.includes('"type":"step"')).length, 2, 'completed steps are kept');
  }
});

test('bad input: one line on stderr, exit code 2, no work done', () => {
  const dir = tmp();
  const cases: Array<[string[], RegExp]> = [
    [['train', '--workers', '0'], /--workers 0 needs --listen/],
    [['train', '--workers', '-1'], /--workers must be a non-negative integer/],
    [['train', '--nodes', '2'], /--nodes needs --listen/],
    [['train', '--listen', 'nowhere'], /--listen must be HOST:PORT/],
    [['train', '--lr', 'fast'], /--lr must be a positive number/],
    [['train', '--backend', 'gpu'], /backend/],
    [['train', '--epochs', '1.5'], /--epochs/],
    [['train', '--bogus'], /Unknown argument: bogus/],
    [['train', '--config', join(dir, 'missing.json')], /cannot read config/],
    [['train', '--data', join(dir, 'missing.txt')], /cannot read data file .*missing.txt/],
    [['train', '--config', 'tiny', '--batch-size', '200'], /fewer than one batch/],
    [['inspect', '--config', 'tiny', '--data', join(dir, 'nope.txt')], /cannot read data file/],
    [[], /name a command/],
  ];
  const write = (name: string, text: string) => {
    const p = join(dir, name);
    spawnSync('sh', ['-c', `printf '%s' '${text}' > ${p}`]);
    return p;
  };
  cases.push([['train', '--config', write('bad.json', '{"model": ')], /not valid JSON/]);
  const tinyText = readFileSync(new URL('../../configs/tiny.json', import.meta.url), 'utf8');
  cases.push([['train', '--config', write('heads.json', tinyText.replace('"nHeads": 4', '"nHeads": 5'))], /divisible by model.nHeads/]);
  for (const [i, [args, pattern]] of cases.entries()) {
    const out = join(dir, `out-${i}`);
    const r = cli([...args, ...(args[0] === 'train' ? ['--out', out] : [])]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    if (args[0] === 'train') assert.equal(existsSync(out), false, `${args.join(' ')} created its output directory`);
  }
});

test('inspect prints the model and data sizes', () => {
  const r = cli(['inspect', '--data', VERDICT]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    parameters: 162_419_712, characters: 20_479, tokens: 5_145, trainTokens: 4_612, valTokens: 534,
    trainBatchesPerEpoch: 9, valBatches: 1,
  });
});
