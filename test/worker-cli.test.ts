import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { WebSocketServer } from 'ws';
import { createTokenFile } from '../src/comm/auth.js';
import { CLI, scratchDir, VERDICT } from './helpers.js';

// `gpt-ddp worker` against things that are not a working coordinator: what it says, where, and its exit code.

interface Ended {
  code: number | null;
  stdout: string[];
  stderr: string[];
}

// Made once for every test (scratchDir's directories go after each test).
const tokenDir = mkdtempSync(join(tmpdir(), 'gpt-ddp-worker-cli-'));
const token = join(tokenDir, 'token');
createTokenFile(token);

const started = new Set<ChildProcess>();
after(() => {
  started.forEach((child) => child.kill('SIGKILL'));
  rmSync(tokenDir, { recursive: true, force: true });
});

/** Starts `worker --connect URL` (no stack traces even if the caller debugs, so stderr is the user's view). */
function worker(connect: string, extra: string[] = []): { child: ChildProcess; ended: Promise<Ended> } {
  const args = [CLI, 'worker', '--connect', connect, '--token-file', token, '--threads', '1', '--backend', 'wasm', ...extra];
  const child = spawn(process.execPath, args, { env: { ...process.env, VERDICT_PATH: VERDICT, GPT_DDP_DEBUG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (chunk: Buffer) => (out.stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (out.stderr += chunk.toString()));
  const lines = (text: string) => text.split('\n').filter((l) => l.trim());
  const ended = new Promise<Ended>((resolve) => child.on('close', (code) => {
    started.delete(child);
    resolve({ code, stdout: lines(out.stdout), stderr: lines(out.stderr) });
  }));
  return { child, ended };
}

/** The worker exits with `code` after exactly one `gpt-ddp: ` line on stderr matching `pattern`, and nothing on stdout. */
async function fails(connect: string, extra: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await worker(connect, extra).ended;
  const what = `worker --connect ${connect} ${extra.join(' ')}`;
  assert.equal(r.code, code, `${what}: exit ${r.code}\n${r.stdout.join('\n')}\n${r.stderr.join('\n')}`);
  assert.deepEqual(r.stdout, [], what);
  assert.equal(r.stderr.length, 1, `${what}: ${r.stderr.join('\n')}`);
  assert.match(r.stderr[0]!, /^gpt-ddp: /, what);
  assert.match(r.stderr[0]!, pattern, what);
}

async function listening(server: Server | WebSocketServer): Promise<number> {
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return (server.address() as AddressInfo).port;
}

test('--ca: a missing file, a directory, a file without a certificate, or a ws:// URL are usage errors naming --ca', async () => {
  const dir = scratchDir('worker-ca');
  const notes = join(dir, 'notes.txt');
  writeFileSync(notes, 'not a certificate\n');
  const missing = join(dir, 'missing.pem');
  await fails('wss://127.0.0.1:1', ['--ca', missing], 2, new RegExp(`--ca ${missing} does not exist$`));
  await fails('wss://127.0.0.1:1', ['--ca', dir], 2, new RegExp(`--ca ${dir} is not a file$`));
  await fails('wss://127.0.0.1:1', ['--ca', notes], 2, /--ca \S+notes\.txt holds no PEM certificate/);
  await fails('ws://127.0.0.1:1', ['--ca', notes], 2, /--ca is for wss:\/\/ URLs/);
});

test('--connect: a port out of range, 0 or missing is a usage error', async () => {
  await fails('ws://127.0.0.1:99999', [], 2, /--connect ws:\/\/127\.0\.0\.1:99999: port 99999 is out of range \(1-65535\)$/);
  await fails('ws://127.0.0.1:0', [], 2, /port 0 is out of range \(1-65535\)$/);
  // URL would take port 80 here without saying so.
  await fails('ws://127.0.0.1', [], 2, /--connect needs a port: ws:\/\/HOST:PORT/);
});

test('a server that is no gpt-ddp coordinator, or nobody: one line on stderr that says which, exit 1', async () => {
  const http = createHttpServer((_req, res) => res.end('a web page\n')).listen(0, '127.0.0.1');
  const port = await listening(http);
  try {
    await fails(`ws://127.0.0.1:${port}`, [], 1, /the server at ws:\/\/127\.0\.0\.1:\d+ answered, but not as a gpt-ddp coordinator \(HTTP 200\): check the address and port$/);
    await fails(`wss://127.0.0.1:${port}`, [], 1, /the server at wss:\/\/127\.0\.0\.1:\d+ does not speak TLS: use ws:\/\/ \(or check the port\)$/);
  } finally {
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
  }
  // Nothing listens there now: a failure, on stderr.
  await fails(`ws://127.0.0.1:${port}`, [], 1, /^gpt-ddp: cannot reach the coordinator at ws:\/\/127\.0\.0\.1:\d+: connect ECONNREFUSED/);

  const dir = scratchDir('worker-tls');
  const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const https = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => res.end('a web page\n')).listen(0, '127.0.0.1');
  const tlsPort = await listening(https);
  try {
    // A TLS server drops a plain-text request before any HTTP answer.
    await fails(`ws://127.0.0.1:${tlsPort}`, [], 1, /the server at ws:\/\/127\.0\.0\.1:\d+ closed the connection during the handshake \(a wss:\/\/ coordinator\? use wss:\/\//);
    await fails(`wss://127.0.0.1:${tlsPort}`, ['--ca', cert], 1, /answered, but not as a gpt-ddp coordinator \(HTTP 200\)/);
  } finally {
    https.closeAllConnections();
    await new Promise<void>((resolve) => https.close(() => resolve()));
  }
});

test('Ctrl-C before the handshake completed: the node says it stopped before joining, exit 130', async () => {
  // Accepts the WebSocket but never sends the challenge, as a stalled coordinator would.
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  const port = await listening(server);
  try {
    const node = worker(`ws://127.0.0.1:${port}`);
    // The node sets its signal handlers before it connects, so the signal is its own to handle.
    const connected = new Promise<void>((resolve) => server.once('connection', () => resolve()));
    await Promise.race([connected, node.ended.then((r) => assert.fail(`the node ended before connecting:\n${r.stdout.join('\n')}\n${r.stderr.join('\n')}`))]);
    node.child.kill('SIGINT');
    const r = await node.ended;
    assert.equal(r.code, 130, r.stderr.join('\n'));
    assert.deepEqual(r.stderr, []);
    assert.deepEqual(r.stdout, [`stopped by SIGINT before joining the run at ws://127.0.0.1:${port} (no handshake completed)`]);
  } finally {
    server.clients.forEach((ws) => ws.terminate());
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
