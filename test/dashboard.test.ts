import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { request } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { afterEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTokenFile } from '../src/comm/auth.js';
import { pageModules } from '../src/dashboard/assets.js';
import { JsonlTail } from '../src/dashboard/tail.js';
import { dashboardUrl, exited, killAll, records, spawnCli } from './cluster-helpers.js';
import { CLI, scratchDir, VERDICT } from './helpers.js';

afterEach(killAll);

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function fetchText(url: string, opts: { method?: string; body?: string; cookie?: string } = {}): Promise<Reply> {
  return new Promise((done, fail) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: { ...(opts.cookie ? { cookie: opts.cookie } : {}), ...(opts.body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => done({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', fail);
    req.end(opts.body);
  });
}

interface Stream {
  /** Every 'records' event: which run, how many records, and when it came. */
  events: Array<{ run: number; records: unknown[] }>;
  runs: Array<{ label: string }>;
  ended: Promise<void>;
}

/** Follows /events until the server ends the stream. */
function follow(url: string, cookie?: string): Stream {
  const s: Stream = { events: [], runs: [], ended: Promise.resolve() };
  s.ended = new Promise((done, fail) => {
    const req = request(`${url}events`, { headers: cookie ? { cookie } : {} }, (res) => {
      assert.equal(res.statusCode, 200);
      let buffer = '';
      res.on('data', (c: Buffer) => {
        buffer += c.toString();
        const parts = buffer.split('\n\n');
        buffer = parts.pop()!;
        for (const part of parts) {
          const event = /^event: (\w+)$/m.exec(part)?.[1];
          const data = /^data: (.*)$/m.exec(part)?.[1];
          if (event === 'runs') s.runs = JSON.parse(data!) as Array<{ label: string }>;
          if (event === 'records') s.events.push(JSON.parse(data!) as { run: number; records: unknown[] });
        }
      });
      res.on('end', () => done());
      res.on('error', fail);
    });
    req.on('error', fail);
    req.end();
  });
  return s;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEB_BUILT = join(ROOT, 'dist', 'web');

const recordsOf = (s: Stream, run: number) => s.events.filter((e) => e.run === run).flatMap((e) => e.records);

test('train --dashboard serves the page and pushes every record of metrics.jsonl as the run goes', async () => {
  const out = join(scratchDir('dash'), 'run');
  const p = spawnCli(['train', '--config', 'tiny', '--epochs', '2', '--eval-freq', '10', '--workers', '1', '--out', out, '--dashboard', '127.0.0.1:0']);
  const url = await dashboardUrl(p);
  const page = await fetchText(url);
  assert.equal(page.status, 200);
  assert.match(page.body, /<title>gpt-ddp dashboard<\/title>/);
  const modules = pageModules(WEB_BUILT);
  assert.ok(modules.includes('src/report/specs.js') && modules.includes('src/math/stats.js'), modules.join());
  for (const asset of ['vendor/vega.js', 'vendor/vega-lite.js', ...modules.map((m) => `web/${m}`)]) {
    const r = await fetchText(url + asset);
    assert.equal(r.status, 200, asset);
    assert.ok(r.body.length > (asset.startsWith('web/') ? 50 : 1000), asset);
  }
  for (const path of ['web/src/util/files.js', 'web/../../package.json', 'nope']) assert.equal((await fetchText(url + path)).status, 404, path);
  assert.equal((await fetchText(url, { method: 'POST' })).status, 405, 'read-only');

  const stream = follow(url);
  await exited(p, 0);
  await stream.ended;
  assert.equal(stream.runs.length, 1);
  assert.deepEqual(recordsOf(stream, 0), records(out), 'the stream carried exactly the records of metrics.jsonl');
  assert.ok(stream.events.filter((e) => e.records.length > 0).length >= 3, 'records came in several pushes as the run went');
});

test('dashboard overlays finished runs; beyond loopback it asks for the token, in a form, not a URL', async () => {
  const runs = await Promise.all([1, 2].map(async (workers) => {
    const out = join(scratchDir('dash'), `w${workers}`);
    await exited(spawnCli(['train', '--config', 'tiny', '--max-steps', '6', '--eval-freq', '3', '--workers', String(workers), '--out', out]), 0);
    return out;
  }));
  const local = spawnCli(['dashboard', ...runs, '--port', '0']);
  const url = await dashboardUrl(local);
  const stream = follow(url);
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(stream.runs.map((r) => r.label), ['w1', 'w2']);
  runs.forEach((dir, i) => assert.deepEqual(recordsOf(stream, i), records(dir), `run ${i}`));
  local.child.kill('SIGINT');
  await exited(local, 0);

  const refused = spawnCli(['dashboard', runs[0]!, '--host', '0.0.0.0', '--port', '0']);
  await exited(refused, 2);
  assert.match(refused.stderr.join('\n'), /^gpt-ddp: a dashboard on 0\.0\.0\.0 needs --token-file/);

  const tokenFile = join(scratchDir('dash'), 'token');
  const token = createTokenFile(tokenFile);
  const open = spawnCli(['dashboard', runs[0]!, '--host', '0.0.0.0', '--port', '0', '--token-file', tokenFile]);
  const wide = (await dashboardUrl(open)).replace('0.0.0.0', '127.0.0.1');
  assert.equal((await fetchText(wide)).headers.location, '/login');
  assert.equal((await fetchText(`${wide}events`)).status, 401);
  assert.equal((await fetchText(`${wide}vendor/vega.js`)).status, 401);
  assert.equal((await fetchText(`${wide}login`, { method: 'POST', body: 'token=wrong' })).status, 401);
  const signIn = await fetchText(`${wide}login`, { method: 'POST', body: `token=${token}` });
  assert.equal(signIn.status, 303);
  const cookie = String(signIn.headers['set-cookie']).split(';')[0]!;
  assert.ok(!cookie.includes(token), 'the cookie is not the token');
  const signedIn = follow(wide, cookie);
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(recordsOf(signedIn, 0), records(runs[0]!));
  open.child.kill('SIGINT');
  await exited(open, 0);
});

test('a browser that stops reading is dropped; the others and the run go on', async () => {
  const dir = scratchDir('dash');
  const step = JSON.stringify({ type: 'step', epoch: 1, step: 0, tokensSeen: 64, loss: 10, stepSec: 0.1, elapsedSec: 1, workers: 1, members: [], pad: 'x'.repeat(2000) });
  writeFileSync(join(dir, 'metrics.jsonl'), `${step}\n`.repeat(3000)); // 6 MB: more than a reader may fall behind
  writeFileSync(join(dir, 'config.json'), '{}');
  const server = spawn(process.execPath, [CLI, 'dashboard', dir, '--port', '0'], { env: { ...process.env, VERDICT_PATH: VERDICT }, stdio: ['ignore', 'pipe', 'pipe'] });
  const url = await new Promise<string>((done) => server.stdout.on('data', (c: Buffer) => {
    const m = /(http:\/\/\S+\/)/.exec(c.toString());
    if (m) done(m[1]!);
  }));
  const { hostname, port } = new URL(url);
  const stalled = connect(Number(port), hostname);
  stalled.write(`GET /events HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`);
  stalled.pause(); // reads nothing until the records below are out
  let received = 0;
  const closed = new Promise<void>((done) => stalled.on('close', () => done()));
  stalled.on('error', () => {}); // the server resets the connection
  await new Promise((r) => setTimeout(r, 500));
  const reader = follow(url);
  for (let i = 0; i < 3; i++) {
    appendFileSync(join(dir, 'metrics.jsonl'), `${step}\n`.repeat(1000));
    await new Promise((r) => setTimeout(r, 600));
  }
  // Only now does it read: what was still buffered for it, then the end of a dropped connection.
  stalled.on('data', (c: Buffer) => (received += c.length));
  stalled.resume();
  await closed;
  assert.ok(received < 0.7 * 6000 * (step.length + 1), `the stalled browser was dropped (it got ${received} bytes)`);
  assert.equal(recordsOf(reader, 0).length, 6000, 'a reading browser got everything');
  server.kill('SIGINT');
  await new Promise((done) => server.on('exit', done));
});

test('train --dashboard with --listen: a port that is taken stops the run with an error, leaving nothing open', async () => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const port = (taken.address() as AddressInfo).port;
  try {
    const base = ['train', '--config', 'tiny', '--data', VERDICT, '--nodes', '1'];
    for (const [listen, dashboard] of [['0', String(port)], [String(port), '0']]) {
      const args = [...base, '--listen', `127.0.0.1:${listen}`, '--dashboard', `127.0.0.1:${dashboard}`, '--out', join(scratchDir('taken'), 'run')];
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, null, `--listen ${listen} --dashboard ${dashboard}: the process did not exit (${r.stderr})`);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, new RegExp(`${port}|EADDRINUSE|in use`), r.stderr);
    }
  } finally {
    taken.close();
  }
});

test('the log tail: complete lines only; a log replaced (a resumed run rewrites it) or cut shorter is read again from its start', () => {
  const dir = scratchDir('tail');
  const path = join(dir, 'metrics.jsonl');
  const tail = new JsonlTail(path);
  assert.deepEqual(tail.read(), { records: [], restarted: false }, 'no file yet');
  writeFileSync(path, '{"type":"step","step":0}\n{"type":"step","step":1}\n{"type":"step","step":2');
  assert.deepEqual(tail.read(), { records: [{ type: 'step', step: 0 }, { type: 'step', step: 1 }], restarted: false });
  appendFileSync(path, '}\n');
  assert.deepEqual(tail.read(), { records: [{ type: 'step', step: 2 }], restarted: false });
  const replace = (text: string) => {
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
  };
  replace('{"type":"step","step":0}\n{"type":"step","step":1}\n{"type":"step","step":2}\n{"type":"step","step":3}\n');
  assert.deepEqual(tail.read(), { records: [0, 1, 2, 3].map((step) => ({ type: 'step', step })), restarted: true }, 'a new inode, even a longer file');
  assert.deepEqual(tail.read(), { records: [], restarted: false });
  writeFileSync(path, '{"type":"step","step":0}\n');
  assert.deepEqual(tail.read(), { records: [{ type: 'step', step: 0 }], restarted: true }, 'the same file, cut shorter');
});

test('the web build emits the page\'s modules and nothing else', () => {
  const out = scratchDir('web');
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'src/dashboard/web/tsconfig.emit.json'), '--outDir', out, '--listEmittedFiles'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const emitted = [...r.stdout.matchAll(/^TSFILE: (.*)$/gm)].map((m) => relative(out, m[1]!)).sort();
  assert.deepEqual(emitted, pageModules(out));
});
