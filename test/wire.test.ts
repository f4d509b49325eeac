import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { newNonce, proof } from '../src/comm/auth.js';
import { controlFrame, decodeFrame, denseFrame, FRAME, maxPayload, peerFrame, reducedFrame, rowsFrame, type FrameType } from '../src/comm/frames.js';
import { parseNodeMessage } from '../src/comm/messages.js';
import { PROTOCOL_VERSION, type TrainMessage } from '../src/comm/protocol.js';
import type { MemberRecord } from '../src/coordinator/metrics.js';
import { gradientPieces } from '../src/math/pieces.js';
import { buildLayout, gradientRegions } from '../src/model/layout.js';
import { Rng } from '../src/util/rng.js';
import { assertSameRun, exited, killAll, records, referenceRun, run, startCoordinator, startNode, tmp, type Coordinator } from './cluster-helpers.js';
import { fakeNode } from './fake-node.js';

afterEach(killAll);

const lost = (dir: string) => records(dir).filter((r): r is MemberRecord => r.type === 'member' && r.event === 'lost');

test('a wrong token, a replayed handshake, a protocol mismatch: refused with one line on both sides', async () => {
  const c = await startCoordinator([...run(4), '--nodes', '1']);
  const wrong = join(tmp(), 'token');
  writeFileSync(wrong, 'not-the-token-of-this-run\n', { mode: 0o600 });
  const intruder = startNode({ url: c.url, token: wrong }, 1);
  await exited(intruder, 2);
  assert.deepEqual(intruder.stdout.filter((l) => l.trim()), []);
  assert.deepEqual(intruder.stderr.filter((l) => l.trim()), ['gpt-ddp: the coordinator refused this node: wrong token (check --token-file)']);
  await c.line(/refused a node from 127\.0\.0\.1: wrong token/);

  const token = readFileSync(c.token, 'utf8').trim();
  const first = await fakeNode({ url: c.url, token });
  assert.equal(first.outcome, 'welcome');
  const replay = await fakeNode({ url: c.url, token: 'unknown', helloBytes: first.hello! });
  assert.equal(replay.outcome, 'refused: replayed handshake');
  const old = await fakeNode({ url: c.url, token, protocol: PROTOCOL_VERSION + 1 });
  assert.match(old.outcome, new RegExp(`^refused: protocol version mismatch: the node speaks version ${PROTOCOL_VERSION + 1}, this coordinator ${PROTOCOL_VERSION}`));
  await c.line(/refused a node from .*: protocol version mismatch/);

  const open = join(tmp(), 'token');
  writeFileSync(open, `${token}\n`, { mode: 0o644 });
  chmodSync(open, 0o644);
  const careless = startNode({ url: c.url, token: open }, 1);
  await exited(careless, 2);
  assert.match(careless.stderr.join('\n'), /readable by others .*chmod 600/);

  const node = startNode(c, 1);
  await exited(c, 0);
  await exited(node, 0);
  assert.equal(c.stdout.filter((l) => l.startsWith('refused')).length, 3, c.stdout.join('\n'));
});

/** A stand-in coordinator that says `challenge` with a protocol version and answers a hello with a bogus welcome. */
async function fakeCoordinator(protocol: number): Promise<{ url: string; close: () => void }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    ws.send(controlFrame({ kind: 'challenge', protocol, nonce: newNonce() }));
    ws.on('message', () => ws.send(controlFrame({
      kind: 'welcome', proof: new Uint8Array(32), member: 1, model: { vocabSize: 10, contextLength: 4, embDim: 4, nHeads: 1, nLayers: 1, dropRate: 0, qkvBias: false },
      wire: 'fp32', pieceFloats: 1024,
    })));
  });
  const { port } = wss.address() as { port: number };
  return { url: `ws://127.0.0.1:${port}`, close: () => wss.close() };
}

test('a node refuses a coordinator that speaks another protocol or cannot prove the token', async () => {
  const token = join(tmp(), 'token');
  writeFileSync(token, 'a-token-of-sixteen-or-more\n', { mode: 0o600 });
  for (const [protocol, pattern] of [
    [PROTOCOL_VERSION + 1, new RegExp(`^gpt-ddp: the coordinator speaks protocol version ${PROTOCOL_VERSION + 1}, this node ${PROTOCOL_VERSION}: install the same gpt-ddp version on both$`)],
    [PROTOCOL_VERSION, /^gpt-ddp: the coordinator could not prove it holds the token/],
  ] as const) {
    const fake = await fakeCoordinator(protocol);
    try {
      const node = startNode({ url: fake.url, token }, 1);
      await exited(node, 2);
      assert.deepEqual(node.stdout.filter((l) => l.trim()), []);
      assert.match(node.stderr.filter((l) => l.trim()).join('\n'), pattern);
    } finally {
      // A server left open would keep this test file's process alive after a failure.
      fake.close();
    }
  }
});

const SMALL = { vocabSize: 64, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: false };

/**
 * A stand-in coordinator that admits a node properly (token proof, zero weights of a small model),
 * gives it slot 0 of a 2-slot step, so the node owns half the tree, then sends `frames`.
 */
async function scriptedCoordinator(token: string, frames: () => Buffer[]): Promise<{ url: string; close: () => void }> {
  const model = SMALL;
  const pieceFloats = 1024;
  const zeros = new Float32Array(buildLayout(model).totalSize);
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    const nonce = newNonce();
    ws.send(controlFrame({ kind: 'challenge', protocol: PROTOCOL_VERSION, nonce }));
    ws.on('message', (data: Buffer) => {
      const frame = decodeFrame(data);
      if (frame.type !== FRAME.control) return;
      const m = parseNodeMessage(frame.message);
      if (m.kind === 'hello') {
        ws.send(controlFrame({ kind: 'welcome', proof: proof(token, 'coordinator', m.nonce, nonce), member: 1, model, wire: 'fp32', pieceFloats }));
        ws.send(controlFrame({ kind: 'state', version: 0 }));
        for (let b = 0; b < 3; b++) {
          for (let d = 0; d * pieceFloats < zeros.length; d++) ws.send(denseFrame({ type: FRAME.state, wire: 'fp32', a: 0, b, c: 0, d, e: 0 }, zeros.subarray(d * pieceFloats, (d + 1) * pieceFloats)));
        }
        ws.send(controlFrame({ kind: 'state-end', version: 0 }));
      } else if (m.kind === 'ready') {
        const ids = () => new Uint8Array(Int32Array.from({ length: 8 }, (_, i) => i + 1).buffer);
        ws.send(controlFrame({ kind: 'train', task: 1, step: 0, slotCount: 2, dropout: { rate: 0, seed: 1 }, slots: [{ slot: 0, samples: [{ id: 0, input: ids(), target: ids() }] }] }));
        for (const f of frames()) ws.send(f);
      }
    });
  });
  const { port } = wss.address() as { port: number };
  return { url: `ws://127.0.0.1:${port}`, close: () => wss.close() };
}

test('a node owning half the tree takes the other half\'s partials once each, and a sum only in place of one', async () => {
  const token = join(tmp(), 'token');
  writeFileSync(token, 'a-token-of-sixteen-or-more\n', { mode: 0o600 });
  const first = gradientPieces(gradientRegions(buildLayout(SMALL)), 1024)[0]!;
  const piece = new Float32Array(first.end - first.start);
  const cases: Array<[string, () => Buffer[], RegExp]> = [
    ['its own half', () => [peerFrame(0, [0, 1], 0, piece, 'fp32')], /unexpected peer piece 0 of step 0 for slots \[0, 1\)/],
    ['another step', () => [peerFrame(3, [1, 2], 0, piece, 'fp32')], /unexpected peer piece 0 of step 3/],
    ['a piece twice', () => [peerFrame(0, [1, 2], 0, piece, 'fp32'), peerFrame(0, [1, 2], 0, piece, 'fp32')], /unexpected peer piece 0 of step 0/],
    ['a peer frame after the sum', () => [reducedFrame(0, 0, piece, 'fp32'), peerFrame(0, [1, 2], 0, piece, 'fp32')], /unexpected peer piece 0 of step 0/],
    // The sum may replace a peer frame (its sender failed), once.
    ['the sum twice after a peer frame', () => [peerFrame(0, [1, 2], 0, piece, 'fp32'), reducedFrame(0, 0, piece, 'fp32'), reducedFrame(0, 0, piece, 'fp32')],
      /unexpected reduced piece 0 of step 0/],
  ];
  for (const [what, frames, pattern] of cases) {
    const fake = await scriptedCoordinator('a-token-of-sixteen-or-more', frames);
    try {
      const node = startNode({ url: fake.url, token }, 1);
      await exited(node, 1);
      assert.match(node.stdout.join('\n'), /weights of step 0 loaded/, `${what}: the node was admitted`);
      assert.match(node.stderr.join('\n'), new RegExp(`^gpt-ddp: the coordinator sent a bad message: ${pattern.source}`, 'm'), what);
    } finally {
      fake.close();
    }
  }
});

/** A token id that none of the task's samples uses. */
function unusedToken(t: TrainMessage): number {
  const used = new Set(t.slots.flatMap((s) => s.samples.flatMap((x) => [...x.input])));
  let id = 1;
  while (used.has(id)) id += 1;
  return id;
}

/** Frames a misbehaving node sends for its train task, and the reason the coordinator must give. */
const misdeeds: Array<[string, (t: TrainMessage) => Buffer, RegExp]> = [
  ['garbage bytes', () => Buffer.from('\x09this is not a frame'), /unknown frame type 9/],
  ['a frame only a coordinator sends', (t) => peerFrame(t.step, [0, 1], 0, new Float32Array(65536), 'fp32'), /may not send frame type 7/],
  ['a short tensor frame', () => Buffer.from([FRAME.partial, 0, 0, 0, 1]), /short frame/],
  ['an oversize frame', () => Buffer.alloc(maxPayload(65536) + 1, 0), /1009|Max payload/],
  ['a frame for a slot it does not own', (t) => denseFrame({ type: FRAME.partial, wire: 'fp32', a: t.task, b: 0, c: 1, d: 0, e: 0 }, new Float32Array(65536)),
    /not this node's to sum/],
  ['a frame for a task that is not under way', (t) => denseFrame({ type: FRAME.partial, wire: 'fp32', a: t.task + 7, b: 1, c: 2, d: 0, e: 0 }, new Float32Array(65536)),
    /task \d+, which is not under way/],
  ['a piece of the wrong size', (t) => denseFrame({ type: FRAME.partial, wire: 'fp32', a: t.task, b: 1, c: 2, d: 0, e: 0 }, new Float32Array(100)), /expected 65536 values/],
  ['a bf16 piece in an fp32 run', (t) => denseFrame({ type: FRAME.partial, wire: 'bf16', a: t.task, b: 1, c: 2, d: 0, e: 0 }, new Float32Array(65536)), /the run uses fp32/],
  ['an infinite gradient', (t) => denseFrame({ type: FRAME.partial, wire: 'fp32', a: t.task, b: 1, c: 2, d: 0, e: 0 }, new Float32Array(65536).fill(Infinity)), /non-finite/],
  ['rows out of the vocabulary', (t) => rowsFrame({ type: FRAME.partialRows, a: t.task, b: 1, c: 2, d: 0, e: 1 }, { rows: Int32Array.from([60000]), values: new Float32Array(32) }),
    /below 50257/],
  ['a row that is not one of its tokens', (t) => rowsFrame({ type: FRAME.partialRows, a: t.task, b: 1, c: 2, d: 0, e: 1 },
    { rows: Int32Array.from([unusedToken(t)]), values: new Float32Array(32) }), /is not a token of these slots/],
  ['a sum announced in a million rows frames', (t) => rowsFrame({ type: FRAME.partialRows, a: t.task, b: 1, c: 2, d: 0, e: 1_000_000 }, { rows: new Int32Array(0), values: new Float32Array(0) }),
    /at most 1 frames/],
  ['a result before its partial sums', (t) => controlFrame({ kind: 'trained', task: t.task, results: [] }), /reported done before all its partial sums/],
  ['a message a node may not send', () => controlFrame({ kind: 'commit', step: 0, gradScale: 1, adam: {} }), /unknown message kind "commit"/],
];

test('bad frames from a node: its connection is closed, its slot recomputed, the run unchanged', async () => {
  const args = [...run(40, 10), '--piece-floats', '65536'];
  const reference = await referenceRun(2, args);
  const c: Coordinator = await startCoordinator([...args, '--workers', '1']);
  const token = readFileSync(c.token, 'utf8').trim();
  for (const [what, frame] of misdeeds) {
    const r = await fakeNode({ url: c.url, token, join: true, onTrain: (ws, t) => ws.send(frame(t)) });
    assert.equal(r.outcome, 'welcome', what);
    assert.notEqual(r.closeCode, 1000, `${what}: the connection was closed on it`);
  }
  const nan = startNode(c, 1, ['--fault', 'nan@30']);
  await exited(c, 0);
  await nan.exit;
  assertSameRun(c.out, reference, 'after every bad frame');
  const reasons = lost(c.out).map((e) => e.reason ?? '');
  misdeeds.forEach(([what, , pattern], i) => assert.match(reasons[i] ?? '', pattern, what));
  assert.match(reasons.at(-1) ?? '', /non-finite value NaN/, 'a NaN gradient');
});

/** A TCP connection upgraded to WebSocket by hand, so a test can then send what no client library would. */
function rawWebSocket(url: string): Promise<{ socket: Socket; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(`GET / HTTP/1.1\r\nHost: ${hostname}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.on('error', () => {});
    socket.once('data', () => resolve({ socket, closed }));
    void closed.then(() => resolve({ socket, closed }));
  });
}

test('1,000 fuzzed frames at the coordinator: no crash, bounded memory, the run unchanged', async () => {
  const reference = await referenceRun(1);
  const c = await startCoordinator([...run(4), '--nodes', '1']);
  const token = readFileSync(c.token, 'utf8').trim();
  const rss = () => {
    assert.equal(c.child.exitCode, null, `the coordinator ended:\n${c.stderr.join('\n')}`);
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${c.child.pid}/status`, 'utf8'))![1]) * 1024;
  };
  const before = rss();
  const samples: number[] = [];
  const rng = new Rng(11);
  const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => rng.below(256)));
  const fuzzed = (): Buffer => {
    const kind = rng.below(4);
    if (kind === 0) return randomBytes(1 + rng.below(200));
    const base = kind === 1 ? denseFrame({ type: (2 + rng.below(6)) as FrameType, wire: rng.uniform() < 0.5 ? 'fp32' : 'bf16', a: rng.below(5), b: rng.below(3), c: rng.below(3), d: rng.below(40), e: 0 }, new Float32Array(rng.below(70000)))
      : kind === 2 ? controlFrame({ kind: ['trained', 'ready', 'losses', 'leave', 'hello', 'x'][rng.below(6)], task: rng.below(3), results: [{ slot: rng.below(3) }] })
        : randomBytes(33 + rng.below(64));
    for (let k = rng.below(6); k > 0; k--) base[rng.below(base.length)] = rng.below(256);
    return base;
  };
  const unauthenticated = (frame: Buffer) => new Promise<void>((resolve) => {
    const ws = new WebSocket(c.url, { perMessageDeflate: false });
    ws.on('error', () => resolve());
    ws.on('close', () => resolve());
    ws.on('open', () => ws.send(frame));
  });
  // Hold every handshake slot with silent connections, then break the WebSocket protocol itself on
  // sockets past the limit and on open ones: no socket error may reach the process.
  const silent = await Promise.all(Array.from({ length: 20 }, () => rawWebSocket(c.url)));
  await Promise.all(Array.from({ length: 10 }, () => rawWebSocket(c.url).then((s) => {
    s.socket.end(Buffer.from([0x8f, 0x80, 1, 2, 3, 4]));
    return s.closed;
  })));
  silent.forEach((s) => s.socket.end(Buffer.from([0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])));
  await Promise.all(silent.map((s) => s.closed));
  for (let batch = 0; batch < 100; batch++) {
    // Seven strangers whose first message is not a hello, three authenticated nodes whose next one is fuzz.
    await Promise.all(Array.from({ length: 10 }, (_, k) => (k < 7 ? unauthenticated(fuzzed())
      : fakeNode({ url: c.url, token, afterWelcome: (ws) => ws.send(fuzzed()) }).then((r) => assert.equal(r.outcome, 'welcome',
        `an authenticated node was not welcomed (close code ${r.closeCode}):\n${c.stdout.slice(-5).join('\n')}`)))));
    samples.push(rss());
  }
  const node = startNode(c, 1);
  await exited(c, 0);
  await exited(node, 0);
  assertSameRun(c.out, reference, 'after the fuzzing');
  // Bounded: after the first hundred frames (buffers of concurrent connections, a few weight sends
  // to nodes that then misbehave) memory stops growing.
  const MiB = 2 ** 20;
  const early = Math.max(...samples.slice(0, 10));
  const late = Math.max(...samples.slice(50));
  assert.ok(late - early < 100 * MiB, `coordinator memory kept growing: ${(early / MiB).toFixed(0)} MiB after 100 frames, ${(late / MiB).toFixed(0)} MiB later`);
  assert.ok(Math.max(...samples) - before < 512 * MiB, `coordinator memory grew by ${((Math.max(...samples) - before) / MiB).toFixed(0)} MiB`);
});

test('wss:// with a certificate: a node that trusts it joins; one that does not is refused by TLS', async () => {
  const dir = tmp('tls');
  const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const reference = await referenceRun(1);
  const c = await startCoordinator([...run(4), '--nodes', '1', '--tls-cert', cert, '--tls-key', key]);
  assert.match(c.url, /^wss:\/\//);
  const untrusting = startNode(c, 1);
  await exited(untrusting, 1);
  assert.match(untrusting.stderr.join('\n'), /^gpt-ddp: cannot reach the coordinator .*(self[- ]signed|certificate)/im);
  const node = startNode(c, 1, ['--ca', cert]);
  await exited(c, 0);
  await exited(node, 0);
  assertSameRun(c.out, reference, 'over wss://');
});
