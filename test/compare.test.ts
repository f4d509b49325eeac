import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { inflateSync } from 'node:zlib';
import { TRAINER_FILE } from '../src/checkpoint/checkpoint.js';
import { runCompare, type CompareArgs } from '../src/cli/compare.js';
import type { MetricRecord, StepRecord } from '../src/coordinator/metrics.js';
import { median } from '../src/math/stats.js';
import type { CompareReport } from '../src/report/compare-report.js';
import { readRun, readSummary } from '../src/report/runs.js';
import { Interrupted, UsageError } from '../src/util/errors.js';
import { CLI, VERDICT, scratchDir } from './helpers.js';

/** Decodes a PNG far enough to prove it is one: chunks, header, and pixel data of the right size. */
function decodePng(buf: Buffer): { width: number; height: number } {
  assert.deepEqual([...buf.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'PNG signature');
  let offset = 8;
  let width = 0, height = 0, bytesPerPixel = 0;
  const idat: Buffer[] = [];
  for (;;) {
    const length = buf.readUInt32BE(offset);
    const type = buf.subarray(offset + 4, offset + 8).toString('latin1');
    const data = buf.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, 'bit depth');
      bytesPerPixel = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[data[9]!]!;
    }
    if (type === 'IDAT') idat.push(data);
    offset += 12 + length;
    if (type === 'IEND') break;
  }
  const pixels = inflateSync(Buffer.concat(idat));
  assert.equal(pixels.length, height * (1 + width * bytesPerPixel), 'pixel data matches the header');
  return { width, height };
}

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 600_000, env: { ...process.env, VERDICT_PATH: VERDICT } });
}

test('compare --quick on 1 and 2 workers: every file, coinciding curves, real PNGs, reuse', () => {
  const out = join(scratchDir('compare'), 'cmp');
  const r = cli(['compare', '--quick', '--workers', '1,2', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\[run 1\/2, 1 worker\] starting/);
  assert.match(r.stdout, /\[run 2\/2, 2 workers\] Ep 3 \(Step 000\d{3}\)/);
  for (const f of ['report.md', 'report.html', 'compare.json', ...['loss-vs-time', 'loss-vs-tokens', 'step-breakdown'].flatMap((p) => [`${p}.png`, `${p}.svg`])]) {
    assert.ok(existsSync(join(out, f)), f);
  }
  const report = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as CompareReport;
  assert.deepEqual(report.rows.map((row) => row.workers), [1, 2]);
  // The table against the raw step records of each run.
  const medianStep = (w: number) => median(readFileSync(join(out, `workers-${w}`, 'metrics.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as MetricRecord).filter((r): r is StepRecord => r.type === 'step').map((r) => r.stepSec));
  const [m1, m2] = [medianStep(1), medianStep(2)];
  assert.deepEqual(report.rows.map((row) => row.medianStepSec), [m1, m2]);
  assert.ok(Math.abs(report.rows[1]!.speedup - m1 / m2) < 1e-9, 'speedup of 2 workers over 1');
  for (const row of report.rows) {
    assert.equal(row.steps, 3 * 72);
    assert.ok(row.bytesPerStep > 0 && row.medianStepSec > 0 && row.finalValLoss! > 0);
  }
  for (const [name, size] of Object.entries(report.plots)) {
    assert.deepEqual(decodePng(readFileSync(join(out, name))), size, name);
    assert.ok(size.width > 500 && size.height > 100);
  }
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.equal((html.match(/<svg/g) ?? []).length, 3, 'plots embedded');
  const md = readFileSync(join(out, 'report.md'), 'utf8');
  assert.ok(md.includes('| 1 worker |') && md.includes('| 2 workers |') && md.includes('![loss-vs-time](loss-vs-time.png)'), md);

  const [one, two] = [1, 2].map((w) => readRun(join(out, `workers-${w}`)).evals);
  assert.ok(one!.length > 0);
  assert.equal(one!.length, two!.length);
  one!.forEach((e, i) => {
    const o = two![i]!;
    assert.equal(e.tokensSeen, o.tokensSeen);
    assert.ok(Math.abs(e.trainLoss - o.trainLoss) <= 1e-5 * e.trainLoss && Math.abs(e.valLoss - o.valLoss) <= 1e-5 * e.valLoss, `eval ${i}`);
  });

  const again = cli(['compare', '--quick', '--workers', '1,2', '--out', out]);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /\[run 1\/2, 1 worker\] reusing the finished run/);
  assert.match(again.stdout, /\[run 2\/2, 2 workers\] reusing the finished run/);
  const text = readFileSync(VERDICT, 'utf8');
  const edited = join(out, '..', 'edited.txt');
  writeFileSync(edited, `${text.slice(0, 200)}${text.slice(200, 210).toUpperCase()}${text.slice(210)}`);
  const otherData = cli(['compare', '--quick', '--workers', '1,2', '--out', out, '--data', edited]);
  assert.equal(otherData.status, 2, 'runs trained on other data are not reused');
  assert.match(otherData.stderr, /workers-1 was trained on other data than --data gives now; pass --force to recompute/);

  const elsewhere = join(out, 'again');
  const rep = cli(['report', join(out, 'workers-1'), join(out, 'workers-2'), '--out', elsewhere]);
  assert.equal(rep.status, 0, rep.stderr);
  assert.deepEqual((JSON.parse(readFileSync(join(elsewhere, 'compare.json'), 'utf8')) as CompareReport).rows, report.rows);
  assert.equal(cli(['report', join(out, 'nope'), '--out', elsewhere]).status, 2);
  assert.equal(cli(['compare', '--workers', '1,x', '--out', elsewhere]).status, 2);

  const foreign = join(out, 'foreign');
  mkdirSync(join(foreign, 'workers-1'), { recursive: true });
  writeFileSync(join(foreign, 'workers-1', 'keep.txt'), 'not ours');
  const refused = cli(['compare', '--quick', '--workers', '1', '--out', foreign]);
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /was not made by compare/);
  assert.ok(existsSync(join(foreign, 'workers-1', 'keep.txt')), 'nothing of the user\'s is deleted');
});

test('a comparison stopped before its run\'s first step continues: resumed from the step-0 checkpoint, or started over without one', async () => {
  const root = scratchDir('compare-early');
  const out = join(root, 'cmp');
  const args: CompareArgs = { workers: [1], config: 'tiny', maxSteps: 4, out, data: VERDICT, backend: 'wasm', targetLoss: 2, force: false, quick: false };
  const lines: string[] = [];
  // Ctrl-C once the workers have started (train logs "output:" just before its first step): the run stops before that step.
  let stopped = false;
  const stopAtStart = (line: string) => {
    lines.push(line);
    if (!stopped && /\] output: /.test(line)) stopped = process.emit('SIGINT');
  };
  await assert.rejects(runCompare(args, stopAtStart), (e: Error) => e instanceof Interrupted && /stopped during \[run 1\/1, 1 worker\]/.test(e.message));
  const dir = join(out, 'workers-1');
  const summary = readSummary(dir);
  assert.deepEqual([summary.interrupted, summary.steps], [true, 0], lines.join('\n'));
  assert.ok(existsSync(join(dir, TRAINER_FILE)), 'the step-0 checkpoint');
  assert.throws(() => readRun(dir), /holds no step record/);

  // The same state without a checkpoint (a run of a version that saved none at step 0): started over.
  const other = join(root, 'other');
  cpSync(out, other, { recursive: true });
  rmSync(join(other, 'workers-1', TRAINER_FILE));

  const log: string[] = [];
  const resumed = await runCompare(args, (line) => log.push(line));
  assert.ok(log.includes(`[run 1/1, 1 worker] resuming ${dir}`), log.join('\n'));
  assert.deepEqual(readRun(dir).steps.map((r) => r.step), [0, 1, 2, 3]);
  assert.equal(resumed.rows[0]!.steps, 4);

  const restartLog: string[] = [];
  const restarted = await runCompare({ ...args, out: other }, (line) => restartLog.push(line));
  assert.ok(restartLog.includes('[run 1/1, 1 worker] starting'), restartLog.join('\n'));
  const losses = (d: string) => readRun(d).steps.map((r) => r.loss);
  assert.deepEqual(losses(join(other, 'workers-1')), losses(dir), 'the same training either way');
  assert.equal(restarted.rows[0]!.steps, 4);

  writeFileSync(join(dir, 'summary.json'), '{"config":');
  await assert.rejects(runCompare(args, () => {}), (e: Error) => e instanceof UsageError && /summary\.json is not valid JSON .*; pass --force to recompute/.test(e.message));
});
