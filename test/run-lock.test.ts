import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LOCK_NAME, lockRunDir } from '../src/util/run-lock.js';
import { CLI, scratchDir, VERDICT } from './helpers.js';

const owner = (dir: string) => JSON.parse(readFileSync(join(dir, LOCK_NAME), 'utf8')) as { pid: number; host: string };
const writeOwner = (dir: string, pid: number, host = hostname()) =>
  writeFileSync(join(dir, LOCK_NAME), JSON.stringify({ pid, host, since: '2026-01-01T00:00:00.000Z' }));

test('run lock: held by a live run, refused with its pid; stale, damaged or our own: taken over; released only by its owner', () => {
  const dir = scratchDir('lock');
  const lock = lockRunDir(dir);
  assert.equal(owner(dir).pid, process.pid);
  lock.release();
  assert.ok(!existsSync(join(dir, LOCK_NAME)), 'released');

  writeOwner(dir, 4242);
  assert.throws(() => lockRunDir(dir, (pid) => pid === 4242), /in use by gpt-ddp process 4242 since 2026-01-01.*Ctrl-C/);
  assert.equal(owner(dir).pid, 4242, 'a live owner keeps its lock');
  const taken = lockRunDir(dir, () => false);
  assert.equal(owner(dir).pid, process.pid, 'a dead owner loses it');

  writeOwner(dir, 4243);
  taken.release();
  assert.equal(owner(dir).pid, 4243, 'release leaves a lock that is not ours');

  writeOwner(dir, 4244, 'elsewhere');
  assert.throws(() => lockRunDir(dir, () => false), new RegExp(`process 4244 on elsewhere .*delete ${join(dir, LOCK_NAME)}`));

  writeFileSync(join(dir, LOCK_NAME), '{"pid":');
  lockRunDir(dir, () => true).release();
  writeOwner(dir, process.pid);
  lockRunDir(dir, () => true).release();
  assert.ok(!existsSync(join(dir, LOCK_NAME)), 'a torn lock and our own pid are taken over');
});

test('a second train on a running run directory is refused before any work; after a SIGKILL the run resumes', async () => {
  const out = join(scratchDir('lock-run'), 'run');
  const run = ['--config', 'tiny', '--max-steps', '400', '--eval-freq', '1000', '--checkpoint-every', '100000', '--workers', '1', '--data', VERDICT];
  const first = spawn(process.execPath, [CLI, 'train', ...run, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => first.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    first.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('output:') && resolve());
    void exited.then((code) => reject(new Error(`the first run ended early (${code})`)));
  });
  try {
    const second = spawnSync(process.execPath, [CLI, 'train', '--resume', out, '--data', VERDICT], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(second.status, 2, second.stderr);
    const lines = second.stderr.trim().split('\n');
    assert.equal(lines.length, 1, second.stderr);
    assert.match(lines[0]!, new RegExp(`in use by gpt-ddp process ${first.pid} since`));
    assert.equal(second.stdout, '', 'nothing started');
    assert.equal(owner(out).pid, first.pid, 'the refused commands left the lock alone');
  } finally {
    first.kill('SIGKILL');
  }
  await exited;
  assert.equal(owner(out).pid, first.pid, 'a killed run leaves its lock behind');
  // Its only checkpoint is step 0's, written before the first step.
  const resumed = spawnSync(process.execPath, [CLI, 'train', '--resume', out, '--data', VERDICT, '--max-steps', '2'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.ok(!existsSync(join(out, LOCK_NAME)), 'the resumed run took the stale lock over and released it');
});

test('--force never starts over a live run that has not reached its first checkpoint', async () => {
  const out = join(scratchDir('lock-force'), 'run');
  // A run waiting for nodes holds its lock and its token, and no checkpoint yet.
  const first = spawn(process.execPath, [CLI, 'train', '--config', 'tiny', '--data', VERDICT, '--listen', '127.0.0.1:0', '--nodes', '1', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => first.on('close', (code) => resolve(code)));
  try {
    await new Promise<void>((resolve, reject) => {
      first.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('listening on') && resolve());
      void exited.then((code) => reject(new Error(`the first run ended early (${code})`)));
    });
    // What a run logs before its first checkpoint commits.
    writeFileSync(join(out, 'metrics.jsonl'), '{"type":"step"}\n');
    const second = spawnSync(process.execPath, [CLI, 'train', '--config', 'tiny', '--data', VERDICT, '--workers', '1', '--out', out, '--force'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(second.status, 2, second.stderr);
    assert.match(second.stderr, new RegExp(`in use by gpt-ddp process ${first.pid} since`));
    assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), '{"type":"step"}\n', 'the live run\'s files are untouched');
    assert.ok(existsSync(join(out, 'token')));
    // A live run that has written its config but no log yet is named as live, too.
    rmSync(join(out, 'metrics.jsonl'));
    writeFileSync(join(out, 'config.json'), '{}\n');
    const third = spawnSync(process.execPath, [CLI, 'train', '--config', 'tiny', '--data', VERDICT, '--workers', '1', '--out', out, '--force'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(third.status, 2, third.stderr);
    assert.match(third.stderr, new RegExp(`in use by gpt-ddp process ${first.pid} since`));
    assert.equal(owner(out).pid, first.pid);
  } finally {
    first.kill('SIGKILL');
  }
  await exited;
});
