import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { loadCheckpoint, readTrainerState } from '../src/checkpoint/checkpoint.js';
import { createTokenFile } from '../src/comm/auth.js';
import type { MemberRecord } from '../src/coordinator/metrics.js';
import { buildLayout } from '../src/model/layout.js';
import { median } from '../src/math/stats.js';
import { assertSameRun, exited, killAll, records, CHECKED, referenceRun, run, RUN, spawnCli, startCoordinator, startNode, stepsIn, tmp } from './cluster-helpers.js';

afterEach(killAll);

const members = (dir: string) => records(dir).filter((r): r is MemberRecord => r.type === 'member');

test('every placement of the same 4 slots computes the same bits as 4 local threads', async () => {
  const reference = await referenceRun(4);
  const placements = [
    { name: '2 nodes x 2 threads', workers: 0, nodes: [2, 2] },
    { name: '4 nodes x 1 thread', workers: 0, nodes: [1, 1, 1, 1] },
    { name: '2 local threads + 1 node x 2 threads', workers: 2, nodes: [2] },
  ];
  for (const p of placements) {
    const c = await startCoordinator([...RUN, '--workers', String(p.workers), '--nodes', String(p.nodes.length)]);
    const nodes = p.nodes.map((t) => startNode(c, t));
    await exited(c, 0);
    for (const n of nodes) await exited(n, 0);
    assertSameRun(c.out, reference, p.name);
    assert.equal(stepsIn(c.out).length, 4, `${p.name}: every step logged`);
    for (const s of stepsIn(c.out)) {
      assert.equal(s.members.filter((m) => m.member > 0 && m.slots.length > 0).length, p.nodes.length, `${p.name}: every node worked`);
      assert.deepEqual(s.members.flatMap((m) => m.slots).sort(), [0, 1, 2, 3], `${p.name}: every slot computed once`);
      for (const m of s.members.filter((x) => x.member > 0)) {
        assert.ok(m.sentBytes > 0 && m.receivedBytes > 0, `${p.name}: node traffic recorded`);
        assert.ok(m.lastHeardSec !== undefined && m.lastHeardSec >= 0 && m.lastHeardSec < 20, `${p.name}: node last heard ${m.lastHeardSec} s ago`);
      }
    }
    assert.equal(members(c.out).filter((m) => m.event === 'join').length, p.nodes.length);
    assert.match(c.stdout.join('\n'), new RegExp(`${p.nodes.length} nodes? \\(`), 'the start line names the nodes');
  }
});

test('a node killed mid-compute or mid-upload: its slots are recomputed within the step, the run is unchanged', async () => {
  const reference = await referenceRun(2);
  const cases = [
    { fault: 'kill-compute@2', workers: 0, nodes: 2, takenBy: 'the other node' },
    { fault: 'kill-upload@2', workers: 1, nodes: 1, takenBy: 'the local thread' },
  ];
  for (const k of cases) {
    const c = await startCoordinator([...RUN, '--workers', String(k.workers), '--nodes', String(k.nodes), '--piece-floats', '65536']);
    const victim = startNode(c, 1, ['--fault', k.fault]);
    const others = Array.from({ length: k.nodes - 1 }, () => startNode(c, 1));
    await exited(c, 0);
    assert.equal(await victim.exit, null, 'the victim died of SIGKILL');
    for (const n of others) await exited(n, 0);
    assertSameRun(c.out, reference, `${k.fault}, slots taken by ${k.takenBy}`);
    const events = members(c.out);
    const lost = events.find((e) => e.event === 'lost');
    assert.equal(lost?.step, 2, `${k.fault}: lost at step 2: ${JSON.stringify(events)}`);
    const moved = events.filter((e) => e.event === 'reassign');
    assert.ok(moved.length > 0 && moved.every((e) => e.step === 2), `${k.fault}: reassigned within step 2`);
    assert.equal(stepsIn(c.out).length, 4, 'no step lost or counted twice');
  }
});

test('a node joining mid-run gets the current state and slots from the next step', async () => {
  const args = run(30, 10);
  const reference = await referenceRun(2, args);
  const c = await startCoordinator([...args, '--nodes', '1']);
  const first = startNode(c, 2);
  await c.line(/Step 000010/);
  const second = startNode(c, 1);
  await exited(c, 0);
  await exited(first, 0);
  await exited(second, 0);
  assertSameRun(c.out, reference, 'with a node joining');
  const join = members(c.out).filter((e) => e.event === 'join');
  assert.equal(join.length, 2);
  assert.ok(join[1]!.step > 10, `joined at step ${join[1]!.step}`);
  const later = stepsIn(c.out).filter((s) => s.step >= join[1]!.step);
  assert.ok(later.length > 0 && later.every((s) => s.members.some((m) => m.member === join[1]!.member && m.slots.length === 1)), 'the new node computes a slot');
});

test('no worker left: the coordinator checkpoints and waits; a new node resumes the step', async () => {
  const reference = await referenceRun(1);
  const c = await startCoordinator([...RUN, '--nodes', '1']);
  const victim = startNode(c, 1, ['--fault', 'kill-compute@1']);
  await c.line(/no worker left/);
  const state = JSON.parse(readFileSync(join(c.out, 'trainer.json'), 'utf8')) as { step: number };
  assert.equal(state.step, 1, 'checkpoint of the last complete step');
  const rescue = startNode(c, 1);
  await exited(c, 0);
  assert.equal(await victim.exit, null);
  await exited(rescue, 0);
  assertSameRun(c.out, reference, 'after waiting for a node');
  assert.ok(members(c.out).some((e) => e.event === 'waiting' && e.step === 1));
});

test('nobody comes within --wait-timeout: exit 1 with the checkpoint kept; --resume finishes the run', async () => {
  const reference = await referenceRun(1);
  const c = await startCoordinator([...RUN, '--nodes', '1', '--wait-timeout', '1']);
  const victim = startNode(c, 1, ['--fault', 'kill-compute@3']);
  await exited(c, 1);
  await victim.exit;
  assert.match(c.stderr.join('\n'), /none joined within 1 s/);
  assert.equal(c.stderr.filter((l) => l.trim()).length, 1, c.stderr.join('\n'));
  const r = await startCoordinator(['--resume', c.out, '--max-steps', '4', '--nodes', '1'], c.out);
  const node = startNode(r, 1);
  await exited(r, 0);
  await exited(node, 0);
  assertSameRun(c.out, reference, 'resumed after the wait timed out');
});

test('a node that stops answering (SIGSTOP) or never returns its result is replaced', async () => {
  const reference = await referenceRun(2, run(12));
  const stopped = await startCoordinator([...run(12), '--workers', '1', '--nodes', '1', '--heartbeat-timeout', '2']);
  const frozen = startNode(stopped, 1);
  await stopped.line(/Step 000002/);
  frozen.child.kill('SIGSTOP');
  await exited(stopped, 0);
  frozen.child.kill('SIGKILL');
  assertSameRun(stopped.out, reference, 'after a frozen node');
  assert.match(members(stopped.out).find((e) => e.event === 'lost')?.reason ?? '', /no heartbeat/);

  const hung = await startCoordinator([...run(12), '--workers', '1', '--nodes', '1', '--heartbeat-timeout', '2']);
  const silent = startNode(hung, 1, ['--fault', 'hang@5']);
  await exited(hung, 0);
  await silent.exit;
  assertSameRun(hung.out, reference, 'after a node that never answered');
  assert.match(members(hung.out).find((e) => e.event === 'lost')?.reason ?? '', /no result for step 5 within 6 s/);
});

test('Ctrl-C on a node leaves cleanly; Ctrl-C on the coordinator checkpoints and ends the nodes', async () => {
  const args = run(40, 10);
  const reference = await referenceRun(2, args);
  const c = await startCoordinator([...args, '--workers', '1', '--nodes', '1']);
  const leaver = startNode(c, 1);
  await c.line(/Step 000010/);
  leaver.child.kill('SIGINT');
  await exited(leaver, 130);
  assert.match(leaver.stdout.join('\n'), /left the run/);
  await exited(c, 0);
  assertSameRun(c.out, reference, 'after a node left');
  assert.ok(members(c.out).some((e) => e.event === 'leave'), 'the departure is recorded as a leave');

  const d = await startCoordinator([...args, '--nodes', '1']);
  const node = startNode(d, 1);
  await d.line(/Step 000010/);
  d.child.kill('SIGINT');
  await exited(d, 130);
  await exited(node, 0);
  assert.match(node.stdout.join('\n'), /the coordinator ended the run: the coordinator was stopped at step \d+/);
  const state = JSON.parse(readFileSync(join(d.out, 'trainer.json'), 'utf8')) as { step: number };
  assert.ok(state.step >= 10 && state.step < 40);
  const r = spawnCli(['train', '--resume', d.out, '--workers', '1']);
  await exited(r, 0);
  assertSameRun(d.out, await referenceRun(1, args), 'resumed after Ctrl-C on the coordinator');
});

test('--wire bf16 halves the bytes on the wire and keeps the nodes identical to the coordinator; report reads remote runs', async () => {
  const runs: Record<string, string> = {};
  for (const wire of ['fp32', 'bf16']) {
    const c = await startCoordinator([...run(6, 3), '--nodes', '2', '--wire', wire]);
    const nodes = [startNode(c, 1), startNode(c, 1)];
    await exited(c, 0);
    for (const n of nodes) await exited(n, 0);
    assert.deepEqual(members(c.out).map((e) => e.event), ['join', 'join'], `${wire}: no node dropped (their weights matched every step)`);
    runs[wire] = c.out;
  }
  const bytes = (dir: string) => stepsIn(dir).flatMap((s) => s.members.map((m) => m.sentBytes + m.receivedBytes));
  const ratio = median(bytes(runs.bf16!)) / median(bytes(runs.fp32!));
  assert.ok(ratio > 0.49 && ratio < 0.53, `bf16 moves ${ratio.toFixed(3)} of fp32's bytes`);
  const evals = (dir: string) => records(dir).filter((r) => r.type === 'eval').map((r) => (r as { valLoss: number }).valLoss);
  evals(runs.bf16!).forEach((v, i) => assert.ok(Math.abs(v - evals(runs.fp32!)[i]!) < 1e-3 * v, `bf16 val loss ${v} vs fp32`));

  const out = join(runs.fp32!, 'report');
  const r = spawnCli(['report', runs.fp32!, runs.bf16!, '--out', out, '--target-loss', '11']);
  await exited(r, 0);
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /2 workers on 2 nodes \(2 threads\)/);
});

test('nodes only, none at the start: the coordinator waits for one; a diverged run stops with one line', async () => {
  const c = await startCoordinator([...run(4)]);
  assert.match(c.stdout.join('\n'), /listening on .*; waiting for 1 node\./, 'it says it waits');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(c.child.exitCode, null, 'still waiting for a node');
  const node = startNode(c, 1);
  await exited(c, 0);
  await exited(node, 0);

  const d = await startCoordinator([...run(6), '--nodes', '2', '--lr', '1e30']);
  const nodes = [startNode(d, 1), startNode(d, 1)];
  await exited(d, 1);
  for (const n of nodes) await n.exit;
  assert.match(d.stderr.join('\n'), /^gpt-ddp: the run failed during step \d+: slots? [\d, ]+ gave a NaN or infinite gradient: it diverged \(try a lower --lr\)$/m);
  assert.equal(d.stderr.filter((l) => l.trim()).length, 1, d.stderr.join('\n'));
  // The last good checkpoint is kept: from before the failing step, with finite weights.
  const failed = Number(/during step (\d+)/.exec(d.stderr.join('\n'))![1]);
  const state = readTrainerState(d.out);
  const kept = loadCheckpoint(d.out, state, buildLayout(state.config.model));
  assert.ok(kept.state.step <= failed, `checkpoint of step ${kept.state.step}, failure at ${failed}`);
  assert.ok(kept.weights.every(Number.isFinite) && kept.moments.v.every(Number.isFinite), 'the kept checkpoint is finite');
});

/**
 * A TCP port nothing listens on now, below Linux's range for outgoing ports (32768 and up): a node
 * retrying a connection could otherwise get it as its own source port.
 */
async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const server = createServer();
    const bound = await new Promise<boolean>((done) => server.once('error', () => done(false)).listen(port, '127.0.0.1', () => done(true)));
    if (!bound) continue;
    await new Promise<void>((done) => server.close(() => done()));
    return port;
  }
}

test('--rejoin: a node started before the coordinator joins it; the coordinator killed and resumed on the same address takes it back, and the run is unchanged', async () => {
  const args = run(12, 4);
  const reference = await referenceRun(1, args);
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}`;
  const token = join(tmp('token'), 'token');
  createTokenFile(token);
  const node = startNode({ url, token }, 1, ['--rejoin', '120']);
  await node.line(/cannot reach the coordinator.*trying again for up to 120 s/);
  const out = join(tmp(), 'run');
  const listen = ['--listen', `127.0.0.1:${port}`, '--token-file', token, '--nodes', '1'];
  const c = spawnCli(['train', ...args, ...CHECKED, '--out', out, ...listen, '--checkpoint-every', '2']);
  await c.line(/Step 000004/);
  c.child.kill('SIGKILL');
  await node.line(/lost the coordinator.*trying again for up to 120 s/);
  const r = spawnCli(['train', '--resume', out, '--max-steps', '12', ...listen, '--wait-timeout', '60']);
  await exited(r, 0);
  await exited(node, 0);
  assert.equal(node.stdout.filter((l) => /^joined /.test(l)).length, 2, node.stdout.join('\n'));
  assertSameRun(out, reference, 'resumed with the rejoined node');

  // Without --rejoin, an unreachable coordinator ends a node at once; with it, after the time given
  // or at Ctrl-C.
  const nowhere = `ws://127.0.0.1:${await freePort()}`;
  const alone = startNode({ url: nowhere, token }, 1);
  await exited(alone, 1);
  assert.match(alone.stderr.join('\n'), /^gpt-ddp: cannot reach the coordinator/m);
  const patient = startNode({ url: nowhere, token }, 1, ['--rejoin', '2']);
  await exited(patient, 1);
  assert.match(patient.stderr.join('\n'), /^gpt-ddp: gave up after 2 s \(--rejoin\); last: cannot reach the coordinator/m);
  const waiting = startNode({ url: nowhere, token }, 1, ['--rejoin', '120']);
  await waiting.line(/trying again/);
  waiting.child.kill('SIGINT');
  await exited(waiting, 130);
  assert.match(waiting.stdout.join('\n'), /stopped by SIGINT/);
});
