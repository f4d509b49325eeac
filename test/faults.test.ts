import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { readTrainerState } from '../src/checkpoint/checkpoint.js';
import { Rng } from '../src/util/rng.js';
import { assertSameRun, stepsIn } from './cluster-helpers.js';
import { CLI, scratchDir, VERDICT } from './helpers.js';

/** A tiny run that checkpoints every step. */
const RUN = ['--config', 'tiny', '--max-steps', '10', '--eval-freq', '3', '--checkpoint-every', '1', '--workers', '1', '--data', VERDICT];
const TRIALS = 24;

function train(args: string[]) {
  return spawnSync(process.execPath, [CLI, 'train', ...args], { encoding: 'utf8', timeout: 120_000 });
}

/** Whether a checkpoint is being written: an uncommitted set, or a file's temporary twin. */
function writing(out: string): boolean {
  const sets = join(out, 'checkpoints');
  return (existsSync(sets) && readdirSync(sets).some((e) => e.startsWith('.incomplete'))) || (existsSync(out) && readdirSync(out).some((e) => /\.tmp-\d+$/.test(e)));
}

/** When to kill: some time after start-up, or some time after the n-th checkpoint write is seen to begin. */
type Kill = { afterMs: number } | { write: number; afterMs: number } | null;

/**
 * Runs the tiny run into `out` and SIGKILLs it as `kill` says. Whether it was killed, its exit
 * code, and the time from its output line (start-up done) to its end.
 */
function runKilling(out: string, kill: Kill): Promise<{ killed: boolean; trainMs: number; code: number | null }> {
  const child = spawn(process.execPath, [CLI, 'train', ...RUN, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  const timers: NodeJS.Timeout[] = [];
  const killIn = (ms: number) => timers.push(setTimeout(() => child.kill('SIGKILL'), ms));
  let started: number | null = null;
  child.stdout.on('data', (chunk: Buffer) => {
    if (started !== null || !chunk.toString().includes('output:')) return;
    started = performance.now();
    if (kill && !('write' in kill)) killIn(kill.afterMs);
  });
  if (kill && 'write' in kill) {
    // Polls for the start of each write; the n-th one arms the kill.
    let seen = 0;
    let inWrite = false;
    const poll = setInterval(() => {
      const now = writing(out);
      if (now && !inWrite && ++seen === kill.write) {
        clearInterval(poll);
        killIn(kill.afterMs);
      }
      inWrite = now;
    }, 1);
    timers.push(poll);
  }
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ killed: signal === 'SIGKILL', trainMs: started === null ? 0 : performance.now() - started, code });
    });
  });
}

test(`SIGKILL at ${TRIALS} random instants: every run resumes to the same weights and evaluations as an undisturbed one`, { timeout: 900_000 }, async (t) => {
  const reference = join(scratchDir('faults-ref'), 'run');
  const { trainMs, code } = await runKilling(reference, null);
  assert.equal(code, 0, 'the undisturbed run failed');

  const rng = new Rng(2024);
  let resumed = 0;
  let duringWrites = 0;
  for (let trial = 0; trial < TRIALS; trial++) {
    const out = join(scratchDir('faults'), 'run');
    // Half the kills at any instant of training, half just after a checkpoint write began.
    const kill: Kill = trial % 2 === 0 ? { afterMs: rng.uniform() * trainMs } : { write: 1 + rng.below(10), afterMs: rng.uniform() * 30 };
    const { killed, code: killedCode } = await runKilling(out, kill);
    if (!killed) assert.equal(killedCode, 0, `trial ${trial} finished, but not cleanly`);
    if (killed && writing(out)) duringWrites++;
    const hasCheckpoint = existsSync(join(out, 'trainer.json'));
    // The original command line plus --resume, as a user would type it.
    const finish = train(hasCheckpoint ? [...RUN, '--resume', out] : [...RUN, '--out', out, '--force']);
    assert.equal(finish.status, 0, `trial ${trial}: ${finish.stderr}`);
    assert.doesNotMatch(finish.stderr, /\n\s+at /, `trial ${trial}: a stack trace`);
    if (killed && hasCheckpoint) resumed++;
    assert.equal(readTrainerState(out).step, 10, `trial ${trial}`);
    assertSameRun(out, reference, `trial ${trial} (killed: ${killed}, resumed: ${hasCheckpoint})`);
    assert.deepEqual(stepsIn(out).map((r) => r.step), [...Array(10).keys()], `trial ${trial}: every step logged once`);
    assert.deepEqual(readdirSync(join(out, 'checkpoints')), ['step-00000010'], `trial ${trial}: only the last checkpoint is kept`);
    rmSync(dirname(out), { recursive: true, force: true }); // 38 MB a trial
  }
  t.diagnostic(`${resumed} trials resumed after a kill, ${duringWrites} kills during a checkpoint write`);
  assert.ok(resumed >= 20, `only ${resumed} of ${TRIALS} trials were killed after their first checkpoint`);
  assert.ok(duringWrites >= 6, `only ${duringWrites} kills landed during a checkpoint write`);
});
