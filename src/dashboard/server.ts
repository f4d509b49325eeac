import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { MetricRecord } from '../coordinator/metrics.js';
import { UsageError } from '../util/errors.js';
import { scriptFiles } from './assets.js';
import { LOGIN_PAGE, PAGE } from './page.js';
import { JsonlTail, type TailRead } from './tail.js';

/** A run directory the dashboard shows; `totalSteps` when known (progress and ETA). */
export interface DashboardRun {
  dir: string;
  label: string;
  totalSteps?: number;
}

export interface DashboardOptions {
  host: string;
  port: number;
  runs: DashboardRun[];
  /** Required to see anything when not null (a non-loopback address). */
  token: string | null;
  /** How often the runs' metrics.jsonl files are read for new records. */
  pollMs?: number;
}

export interface Dashboard {
  url: string;
  close(): Promise<void>;
}

/** A browser that reads slower than this falls behind by this much, then is dropped: training never waits for it. */
const MAX_BUFFERED = 4 * 2 ** 20;
const COOKIE = 'gpt-ddp-dashboard';

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** The session cookie's value: derived from the token, so the token itself never travels in a URL or a log. */
const sessionOf = (token: string) => createHmac('sha256', token).update('gpt-ddp dashboard session').digest('hex');

function sameSecret(a: string, b: string): boolean {
  const [x, y] = [a, b].map((s) => createHash('sha256').update(s).digest());
  return timingSafeEqual(x!, y!);
}

function cookieValue(req: IncomingMessage): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === COOKIE) return value.join('=');
  }
  return null;
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
  res.end(body);
}

/** Reads a small urlencoded form body (the login form); null when it is too large. */
function formBody(req: IncomingMessage): Promise<URLSearchParams | null> {
  return new Promise((done) => {
    let body = '';
    req.on('data', (chunk: Buffer) => {
      body += chunk.toString('utf8');
      if (body.length > 4096) req.destroy();
    });
    req.on('end', () => done(new URLSearchParams(body)));
    req.on('close', () => done(null));
  });
}

/** Bytes queued for a browser: the backlog sits in the socket's buffer (the response hands its writes straight to it). */
const buffered = (res: ServerResponse) => (res.socket?.writableLength ?? 0) + res.writableLength;

/** Each run's records so far, and the browsers that follow them by server-sent events. */
class RunFeed {
  private readonly tails: JsonlTail[];
  private readonly records: MetricRecord[][];
  private readonly clients = new Set<ServerResponse>();
  /** Bytes still queued for each browser when its replay of the history was written. */
  private readonly replayed = new Map<ServerResponse, number>();

  constructor(private readonly runs: DashboardRun[]) {
    this.tails = runs.map((r) => new JsonlTail(join(r.dir, 'metrics.jsonl')));
    this.records = runs.map(() => []);
  }

  /** New records of every run, pushed to every browser. */
  poll(): void {
    this.tails.forEach((tail, run) => {
      let read: TailRead;
      try {
        read = tail.read();
      } catch {
        return; // e.g. the log replaced as a resumed run starts: read it at the next poll; never disturb training
      }
      if (read.restarted) {
        // The browsers' copies are stale: ending their streams makes them reconnect and get the whole log again.
        this.records[run] = read.records;
        for (const res of this.clients) res.end();
        this.clients.clear();
        return;
      }
      if (read.records.length === 0) return;
      this.records[run]!.push(...read.records);
      this.broadcast('records', { run, records: read.records });
    });
  }

  follow(res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write('retry: 2000\n\n');
    const runs = this.runs.map((r, id) => ({ id, label: r.label, dir: r.dir, totalSteps: r.totalSteps ?? null }));
    this.write(res, 'runs', runs);
    this.records.forEach((records, run) => this.write(res, 'records', { run, records }));
    // The history may exceed the limit by itself: only what queues up after it counts.
    this.replayed.set(res, buffered(res));
    this.clients.add(res);
    res.on('close', () => {
      this.clients.delete(res);
      this.replayed.delete(res);
    });
  }

  private broadcast(event: string, data: unknown): void {
    for (const res of this.clients) this.write(res, event, data);
  }

  private write(res: ServerResponse, event: string, data: unknown): void {
    if (this.clients.has(res) && buffered(res) > MAX_BUFFERED + (this.replayed.get(res) ?? 0)) {
      this.clients.delete(res);
      res.destroy();
      return;
    }
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  close(): void {
    for (const res of this.clients) res.end();
    this.clients.clear();
  }
}

/**
 * Serves the live dashboard: the page, its scripts, and the runs' records as server-sent events
 * (read from their metrics.jsonl, so a finished run, a run of another process and this process's
 * own run look the same). Read-only; with a token, a login form sets a session cookie first.
 */
export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const scripts = scriptFiles();
  const feed = new RunFeed(opts.runs);
  const session = opts.token === null ? null : sessionOf(opts.token);
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://dashboard').pathname;
    if (session !== null && path === '/login') {
      if (req.method !== 'POST') return send(res, 200, 'text/html; charset=utf-8', LOGIN_PAGE(''));
      void formBody(req).then((form) => {
        const token = form?.get('token') ?? '';
        if (opts.token !== null && sameSecret(token, opts.token)) {
          send(res, 303, 'text/plain', 'signed in', { location: '/', 'set-cookie': `${COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/` });
        } else {
          send(res, 401, 'text/html; charset=utf-8', LOGIN_PAGE('That is not the run\'s token.'));
        }
      });
      return;
    }
    if (session !== null && !sameSecret(cookieValue(req) ?? '', session)) {
      return path === '/' ? send(res, 303, 'text/plain', 'sign in', { location: '/login' }) : send(res, 401, 'text/plain', 'sign in first: /login');
    }
    if (req.method !== 'GET') return send(res, 405, 'text/plain', 'read-only');
    if (path === '/') return send(res, 200, 'text/html; charset=utf-8', PAGE);
    if (path === '/events') return feed.follow(res);
    const file = scripts.get(path);
    if (file) return send(res, 200, 'text/javascript; charset=utf-8', readFileSync(file));
    send(res, 404, 'text/plain', 'not found');
  });
  await new Promise<void>((done, fail) => {
    server.once('error', (err: NodeJS.ErrnoException) => fail(new UsageError(`cannot serve the dashboard on ${opts.host}:${opts.port} (${err.code ?? err.message})`)));
    server.listen(opts.port, opts.host, () => done());
  });
  const timer = setInterval(() => feed.poll(), opts.pollMs ?? 250);
  timer.unref();
  feed.poll();
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const shown = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${shown}:${port}/`,
    close: () => {
      clearInterval(timer);
      feed.poll();
      feed.close();
      const closed = new Promise<void>((done) => server.close(() => done()));
      server.closeAllConnections();
      return closed;
    },
  };
}
