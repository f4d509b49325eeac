import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  checkpointSetName, flatFromTensors, loadCheckpoint, loadWeightsFile, modelTensors, MODEL_FILE, readTrainerState, saveCheckpoint, TRAINER_FILE,
} from '../src/checkpoint/checkpoint.js';
import { decodeSafetensors, encodeSafetensors, writeSafetensors } from '../src/checkpoint/safetensors.js';
import { loadConfig } from '../src/cli/common.js';
import { runTrain, type TrainArgs } from '../src/cli/train.js';
import type { EvalRecord, MetricRecord } from '../src/coordinator/metrics.js';
import { initParams } from '../src/model/init.js';
import { buildLayout } from '../src/model/layout.js';
import { UsageError } from '../src/util/errors.js';
import { CLI, VERDICT, scratchDir } from './helpers.js';

const tmp = () => scratchDir('ckpt');
const quiet = () => {};
const tinyLayout = () => buildLayout(loadConfig('tiny').model);

function tinyRun(extra: Partial<TrainArgs>) {
  return runTrain({ config: 'tiny', data: VERDICT, backend: 'wasm', workers: 2, evalFreq: 2, ...extra }, quiet);
}

function evals(dir: string): EvalRecord[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as MetricRecord).filter((r): r is EvalRecord => r.type === 'eval');
}

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, VERDICT_PATH: VERDICT } });
}

test('safetensors: round trip, and every lie in a file is caught', () => {
  const a = { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) };
  const b = { shape: [1], data: Float32Array.from([7]) };
  const bytes = Buffer.concat(encodeSafetensors([['a', a], ['b', b]], { step: '4' }));
  assert.equal((bytes.readUInt32LE(0) + 8) % 8, 0, 'data is 8-byte aligned');
  const back = decodeSafetensors(bytes);
  assert.deepEqual(back.tensors.get('a'), a);
  assert.deepEqual(back.tensors.get('b'), b);
  assert.equal(back.metadata.step, '4');

  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString()) as Record<string, { data_offsets: number[]; shape: number[]; dtype: string }>;
  const withHeader = (h: object) => {
    const json = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, bytes.subarray(8 + headerLength)]);
  };
  const rejects = (buf: Buffer, pattern: RegExp) =>
    assert.throws(() => decodeSafetensors(buf, 'f'), (e: Error) => e instanceof UsageError && pattern.test(e.message));
  rejects(bytes.subarray(0, 5), /shorter than the 8-byte header/);
  rejects(bytes.subarray(0, bytes.length - 4), /truncated|no tensor claims|ends at byte/);
  const lying = Buffer.from(bytes);
  lying.writeBigUInt64LE(BigInt(1e12), 0);
  rejects(lying, /header length .* exceeds the file/);
  rejects(withHeader({ ...header, a: { ...header.a, shape: [3, 3] } }), /claims 24 bytes for shape \[3, 3\]/);
  rejects(withHeader({ ...header, a: { ...header.a, dtype: 'F16' } }), /dtype "F16"/);
  rejects(withHeader({ ...header, b: { ...header.b, data_offsets: [20, 24] } }), /overlap or hole/);
  rejects(Buffer.concat([bytes.subarray(0, 8), Buffer.from('{"a": '), bytes.subarray(14)]), /not JSON|header/);
});

test('model.safetensors holds the reference state_dict: PyTorch names, [out, in] Linear weights, mask buffers', () => {
  const layout = tinyLayout();
  const flat = initParams(layout, 3);
  const tensors = new Map(modelTensors(layout, flat));
  const D = layout.config.embDim;
  const ff1 = tensors.get('trf_blocks.0.ff.layers.0.weight')!;
  assert.deepEqual(ff1.shape, [4 * D, D]);
  const spec = layout.byName.get('trf_blocks.0.ff.layers.0.weight')!;
  // stored [in, out]: element (i, o) at i * 4D + o; PyTorch's [out, in]: at o * D + i
  assert.equal(ff1.data[5 * D + 2], flat[spec.offset + 2 * 4 * D + 5]);
  assert.deepEqual(tensors.get('out_head.weight')!.shape, [layout.config.vocabSize, D]);
  assert.deepEqual(tensors.get('trf_blocks.1.att.mask')!.shape, [32, 32]);
  const round = flatFromTensors(layout, { tensors, metadata: {} }, 'x');
  assert.deepEqual(round, flat);

  const without = (name: string) => new Map([...tensors].filter(([n]) => n !== name));
  assert.throws(() => flatFromTensors(layout, { tensors: without('final_norm.scale'), metadata: {} }, 'x'), /missing tensor "final_norm.scale"/);
  assert.throws(() => flatFromTensors(layout, { tensors: new Map([...tensors, ['extra.weight', { shape: [1], data: new Float32Array(1) }]]), metadata: {} }, 'x'), /unexpected tensor "extra.weight"/);
  const big = buildLayout({ ...layout.config, embDim: 64 });
  assert.throws(() => flatFromTensors(big, { tensors, metadata: {} }, 'x'), /has shape .* the model needs .*check --config/);
});

test('3 steps + resume + 3 steps equals 6 steps; a checkpoint is one committed set of files of one run', async () => {
  const once = await tinyRun({ out: join(tmp(), 'once'), maxSteps: 6 });
  const dir = join(tmp(), 'split');
  await tinyRun({ out: dir, maxSteps: 3 });
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temporary files left');
  assert.deepEqual(readdirSync(join(dir, 'checkpoints')), ['step-00000003'], 'only the committed set is kept');
  const resumed = await runTrain({ resume: dir, data: VERDICT, backend: 'wasm', workers: 2, maxSteps: 6 }, quiet);
  assert.deepEqual([...resumed.weights], [...once.weights], 'identical weights');
  assert.deepEqual(evals(dir), evals(once.outDir).map((e, i) => ({ ...e, elapsedSec: evals(dir)[i]!.elapsedSec, evalSec: evals(dir)[i]!.evalSec })));
  const ckpt = loadCheckpoint(dir, readTrainerState(dir), tinyLayout());
  assert.equal(ckpt.state.step, 6);
  assert.deepEqual([...ckpt.weights], [...once.weights]);
  assert.equal(readlinkSync(join(dir, MODEL_FILE)), join(checkpointSetName(6), MODEL_FILE), 'model.safetensors in the run directory links to the latest weights');
  assert.deepEqual([...loadWeightsFile(tinyLayout(), join(dir, MODEL_FILE))], [...once.weights]);

  // Files of another step, or of another run at the same step, are refused by --resume and evaluate alike.
  const other = join(tmp(), 'other');
  cpSync(dir, other, { recursive: true, verbatimSymlinks: true });
  const set = (d: string, step: number) => join(d, checkpointSetName(step), MODEL_FILE);
  const three = join(tmp(), 'three');
  await tinyRun({ out: three, maxSteps: 3 });
  cpSync(set(three, 3), set(other, 6));
  assert.throws(() => loadCheckpoint(other, readTrainerState(other), tinyLayout()), /is from step 3 but trainer.json from step 6/);
  cpSync(set(once.outDir, 6), set(other, 6));
  assert.throws(() => loadCheckpoint(other, readTrainerState(other), tinyLayout()), /belongs to another run/);
  const foreign = cli(['evaluate', '--checkpoint', other, '--workers', '1']);
  assert.equal(foreign.status, 2);
  assert.match(foreign.stderr, /^gpt-ddp: .*belongs to another run/);

  // trainer.json is checked field by field.
  const state = JSON.parse(readFileSync(join(dir, TRAINER_FILE), 'utf8')) as Record<string, unknown>;
  const edits: Array<[Record<string, unknown>, RegExp]> = [
    [{ formatVersion: 99 }, /unknown checkpoint format version 99/],
    [{ step: -1 }, /"step" must be a non-negative integer/],
    [{ tokensSeen: 5 }, /"tokensSeen" must be step x batch size x context length = 384/],
    [{ runId: 'x' }, /"runId" must be 32 hexadecimal digits/],
    [{ checkpoint: '../elsewhere' }, /"checkpoint" must be "checkpoints\/step-00000006"/],
    [{ elapsedSec: 'soon' }, /"elapsedSec" must be a non-negative number/],
    [{ seed: 7 }, /"seed" must equal the config's seed/],
    [{ slots: 99 }, /"slots" cannot exceed the batch size/],
  ];
  for (const [edit, message] of edits) {
    writeFileSync(join(other, TRAINER_FILE), JSON.stringify({ ...state, ...edit }));
    const r = cli(['train', '--resume', other]);
    assert.equal(r.status, 2, `${JSON.stringify(edit)}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }

  // The original settings may be given again; a different one is refused, naming both values.
  const same = cli(['train', '--resume', dir, '--config', 'tiny', '--eval-freq', '2', '--max-steps', '6', '--workers', '1']);
  assert.equal(same.status, 0, same.stderr);
  const clash = cli(['train', '--resume', dir, '--lr', '0.1']);
  assert.equal(clash.status, 2);
  assert.match(clash.stderr, /--lr 0.1 differs from the resumed run's 0.0004/);
  const otherConfig = cli(['train', '--resume', dir, '--config', 'gpt2-124m-verdict']);
  assert.equal(otherConfig.status, 2);
  assert.match(otherConfig.stderr, /--config gpt2-124m-verdict differs from the resumed run's config in model\.contextLength: 256 vs 32/);

  // Data of the same length but other tokens is refused.
  const text = readFileSync(VERDICT, 'utf8');
  const edited = join(tmp(), 'edited.txt');
  writeFileSync(edited, `${text.slice(0, 100)}${text.slice(100, 110).toUpperCase()}${text.slice(110)}`);
  const otherData = cli(['train', '--resume', dir, '--data', edited]);
  assert.equal(otherData.status, 2);
  assert.match(otherData.stderr, /the data's tokens differ from the ones the run was trained on/);
});

test('a torn last line of metrics.jsonl is dropped on resume with a notice; damage elsewhere is refused', async () => {
  const dir = join(tmp(), 'torn');
  await tinyRun({ out: dir, maxSteps: 3 });
  const log = join(dir, 'metrics.jsonl');
  const whole = readFileSync(log, 'utf8');
  writeFileSync(log, `${whole}{"type":"step","epoch":1,"st`);
  const r = cli(['train', '--resume', dir, '--max-steps', '4', '--workers', '2']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /dropped a torn last line/);
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  assert.ok(lines.every((l) => JSON.parse(l) !== null), 'every line is a record');
  assert.deepEqual(lines.map((l) => JSON.parse(l) as MetricRecord).filter((r) => r.type === 'step').map((r) => r.step), [0, 1, 2, 3], 'steps 0-3, each once');

  const lines2 = readFileSync(log, 'utf8').split('\n');
  writeFileSync(log, [lines2[0], 'garbage', ...lines2.slice(1)].join('\n'));
  const damaged = cli(['train', '--resume', dir, '--max-steps', '5', '--workers', '2']);
  assert.equal(damaged.status, 2);
  assert.match(damaged.stderr, /line 2 is not a metrics record/);
});

test('step 0 of a run from its seed is trainer.json alone: resume makes its weights again; from --init-from, the files are written', async () => {
  const layout = tinyLayout();
  const config = loadConfig('tiny');
  const state = {
    runId: 'ab'.repeat(16), step: 0, epoch: 0, batchInEpoch: 0, tokensSeen: 0, elapsedSec: 0.5, seed: config.training.seed, config, backend: 'wasm',
    dataCharacters: 20479, dataFingerprint: 'cd'.repeat(32), slots: 2, initFrom: null,
  };
  const seeded = join(tmp(), 'seeded');
  mkdirSync(seeded);
  const weights = initParams(layout, config.training.seed);
  const moments = { m: new Float32Array(layout.totalSize), v: new Float32Array(layout.totalSize) };
  saveCheckpoint(seeded, layout, weights, moments, state);
  assert.deepEqual(readdirSync(seeded), [TRAINER_FILE], 'no weight files, no model.safetensors link');
  const back = loadCheckpoint(seeded, readTrainerState(seeded), layout);
  assert.equal(back.state.checkpoint, null);
  assert.deepEqual([back.weights, back.moments], [weights, moments], 'the seed\'s weights, zero moments');

  const given = join(tmp(), 'given');
  mkdirSync(given);
  saveCheckpoint(given, layout, weights, moments, { ...state, initFrom: '/somewhere/weights.safetensors' });
  assert.equal(readTrainerState(given).checkpoint, checkpointSetName(0));
  assert.ok(existsSync(join(given, checkpointSetName(0), MODEL_FILE)), 'weights that the seed cannot make again are written');

  // null is the seed's step 0 only.
  const raw = JSON.parse(readFileSync(join(seeded, TRAINER_FILE), 'utf8')) as Record<string, unknown>;
  const edits: Array<[Record<string, unknown>, RegExp]> = [
    [{ step: 1, tokensSeen: 2 * 32 * config.training.batchSize / 2 }, /"checkpoint" must be "checkpoints\/step-00000001" for step 1, got null/],
    [{ initFrom: '/somewhere/weights.safetensors' }, /"checkpoint" must be "checkpoints\/step-00000000" for step 0 of a run started from --init-from, got null/],
  ];
  for (const [edit, message] of edits) {
    writeFileSync(join(seeded, TRAINER_FILE), JSON.stringify({ ...raw, ...edit }));
    assert.throws(() => readTrainerState(seeded), message);
  }

  // A run's own step-0 state (what a kill before its first step leaves) resumes to the same weights as an undisturbed run.
  const straight = await tinyRun({ out: join(tmp(), 'straight0'), maxSteps: 3, workers: 1 });
  const early = join(tmp(), 'early0');
  cpSync(straight.outDir, early, { recursive: true, verbatimSymlinks: true });
  for (const f of ['checkpoints', MODEL_FILE, 'summary.json']) rmSync(join(early, f), { recursive: true, force: true });
  writeFileSync(join(early, 'metrics.jsonl'), '');
  const done = JSON.parse(readFileSync(join(early, TRAINER_FILE), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(early, TRAINER_FILE), JSON.stringify({ ...done, step: 0, epoch: 0, batchInEpoch: 0, tokensSeen: 0, elapsedSec: 0, checkpoint: null }));
  const resumed = await runTrain({ resume: early, data: VERDICT, backend: 'wasm', workers: 1, maxSteps: 3 }, quiet);
  assert.deepEqual([...resumed.weights], [...straight.weights]);
});

test('a run killed before its first checkpoint cannot be resumed; --force starts it over', () => {
  const dir = join(tmp(), 'early');
  mkdirSync(join(dir, 'checkpoints', '.incomplete-1'), { recursive: true });
  writeFileSync(join(dir, 'metrics.jsonl'), '');
  const resume = cli(['train', '--resume', dir]);
  assert.equal(resume.status, 2);
  assert.match(resume.stderr, /holds no checkpoint .* stopped before its first checkpoint: start it over with --out .* --force/);
  const again = cli(['train', '--config', 'tiny', '--max-steps', '1', '--workers', '1', '--out', dir]);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /holds a run that stopped before its first checkpoint \(nothing to resume\); pass --force/);
  const forced = cli(['train', '--config', 'tiny', '--max-steps', '1', '--workers', '1', '--out', dir, '--force']);
  assert.equal(forced.status, 0, forced.stderr);
  assert.deepEqual(readdirSync(join(dir, 'checkpoints')), ['step-00000001']);
});

test('a --listen run stopped while it waited for nodes (only its token left): --force starts it over and keeps the token', () => {
  const dir = join(tmp(), 'waited');
  mkdirSync(dir);
  writeFileSync(join(dir, 'token'), 'a-token-of-sixteen-or-more\n', { mode: 0o600 });
  const run = ['train', '--config', 'tiny', '--max-steps', '1', '--workers', '1', '--listen', '127.0.0.1:0', '--out', dir];
  const again = cli(run);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /holds a run that stopped before its first checkpoint \(nothing to resume\); pass --force/);
  const forced = cli([...run, '--force']);
  assert.equal(forced.status, 0, forced.stderr);
  assert.equal(readFileSync(join(dir, 'token'), 'utf8'), 'a-token-of-sixteen-or-more\n', 'the nodes\' copy still works');
  assert.deepEqual(readdirSync(join(dir, 'checkpoints')), ['step-00000001']);
});

test('Ctrl-C stops after the current step with a checkpoint that --resume continues', async () => {
  const out = join(tmp(), 'sigint');
  const child = spawn(process.execPath, [CLI, 'train', '--config', 'tiny', '--workers', '2', '--out', out, '--max-steps', '400'],
    { env: { ...process.env, VERDICT_PATH: VERDICT }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  while (!stdout.includes('Step 000010')) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGINT');
  assert.equal(await exited, 130, stdout);
  assert.match(stdout, /stopped: \d+ steps .* continue with --resume/);
  const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"type":"step"')).length;
  const state = JSON.parse(readFileSync(join(out, TRAINER_FILE), 'utf8')) as { step: number };
  assert.equal(state.step, steps);
  const resumed = await runTrain({ resume: out, data: VERDICT, backend: 'wasm', workers: 2, maxSteps: steps + 2 }, quiet);
  assert.deepEqual(resumed.metrics.of('step').map((r) => r.step), [...Array(steps + 2).keys()], 'every step once, none redone');
  const straight = await tinyRun({ out: join(tmp(), 'straight'), maxSteps: steps + 2, evalFreq: undefined });
  assert.deepEqual([...resumed.weights], [...straight.weights], 'the same weights as a run that was not stopped');
});

test('--init-from starts from given weights; evaluate and generate read checkpoints', async () => {
  const layout = tinyLayout();
  const file = join(tmp(), 'init.safetensors');
  writeSafetensors(file, modelTensors(layout, initParams(layout, 99)));
  const seeded = await tinyRun({ out: join(tmp(), 'a'), maxSteps: 2, seed: 99 });
  const fromFile = await tinyRun({ out: join(tmp(), 'b'), maxSteps: 2, seed: 99, initFrom: file });
  assert.deepEqual([...fromFile.weights], [...seeded.weights]);

  const wrong = cli(['train', '--init-from', file, '--out', join(tmp(), 'c')]);
  assert.equal(wrong.status, 2, wrong.stderr);
  assert.match(wrong.stderr, /shape .* the model needs/);
  const cut = join(tmp(), 'cut.safetensors');
  writeFileSync(cut, readFileSync(file).subarray(0, 1000));
  const truncated = cli(['train', '--config', 'tiny', '--init-from', cut, '--out', join(tmp(), 'd')]);
  assert.equal(truncated.status, 2);
  assert.match(truncated.stderr, /not a valid safetensors file/);

  const run = await tinyRun({ out: join(tmp(), 'e'), maxSteps: 5, evalFreq: 4 });
  const last = evals(run.outDir).at(-1)!;
  assert.equal(last.step, 4);
  const ev = cli(['evaluate', '--checkpoint', run.outDir, '--workers', '2']);
  assert.equal(ev.status, 0, ev.stderr);
  const got = JSON.parse(ev.stdout) as { trainLoss: number; valLoss: number; step: number };
  assert.equal(got.step, 5);
  assert.ok(Math.abs(got.trainLoss - last.trainLoss) < 1e-6 && Math.abs(got.valLoss - last.valLoss) < 1e-6, `${ev.stdout} vs ${JSON.stringify(last)}`);
  const viaFile = cli(['evaluate', '--checkpoint', join(run.outDir, MODEL_FILE), '--config', 'tiny', '--workers', '1']);
  assert.equal(viaFile.status, 0, viaFile.stderr);
  assert.ok(Math.abs((JSON.parse(viaFile.stdout) as { valLoss: number }).valLoss - last.valLoss) < 1e-6);

  const gen = cli(['generate', '--checkpoint', run.outDir, '--prompt', 'Every effort moves you', '--max-new-tokens', '40']);
  assert.equal(gen.status, 0, gen.stderr);
  assert.ok(gen.stdout.startsWith('Every effort moves you') && gen.stdout.length > 30, gen.stdout);
  const args = ['generate', '--checkpoint', run.outDir, '--prompt', 'I had', '--temperature', '1.2', '--top-k', '20', '--seed', '5'];
  const [first, again, otherSeed] = [cli(args), cli(args), cli([...args.slice(0, -1), '6'])];
  for (const r of [first, again, otherSeed]) assert.equal(r.status, 0, r.stderr);
  assert.equal(again.stdout, first.stdout, 'sampling with a seed is reproducible');
  assert.notEqual(otherSeed.stdout, first.stdout, 'another seed draws other tokens');
  assert.equal(cli(['generate', '--checkpoint', run.outDir, '--prompt', 'x', '--temperature', '-1']).status, 2);
  assert.equal(cli(['generate', '--checkpoint', join(tmp(), 'none'), '--prompt', 'x']).status, 2);
});
