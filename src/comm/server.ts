import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { gradientPieces } from '../math/pieces.js';
import { gradientRegions, type ParamLayout } from '../model/layout.js';
import { newNonce, proof, proofMatches } from './auth.js';
import { controlFrame, decodeFrame, FRAME, maxPayload, ProtocolError } from './frames.js';
import { parseNodeMessage } from './messages.js';
import { PROTOCOL_VERSION, type HelloMessage, type WireFormat } from './protocol.js';
import { RemoteNode } from './remote.js';

export interface ServerOptions {
  host: string;
  port: number;
  token: string;
  tls?: { cert: Buffer; key: Buffer };
  layout: ParamLayout;
  pieceFloats: number;
  wire: WireFormat;
  /** A node silent for this long is lost; a step's deadline is at least 3 times this. */
  heartbeatTimeoutSec: number;
  /** One line per refused connection. */
  log: (line: string) => void;
}

const HANDSHAKE_MS = 10_000;
const MAX_HANDSHAKES = 16;

/**
 * Where remote nodes join a run. A connection must answer a fresh challenge with an HMAC of the
 * run's token before anything else is read from it; then it waits, authenticated, until the
 * cluster admits it at a step boundary.
 */
export class NodeServer {
  private readonly wss: WebSocketServer;
  private readonly joined: RemoteNode[] = [];
  private readonly waiters: Array<() => void> = [];
  private readonly seenNonces = new Set<string>();
  private handshakes = 0;
  private nextMember = 1;

  private constructor(private readonly opts: ServerOptions, private readonly http: ReturnType<typeof createHttpServer>, readonly url: string) {
    this.wss = new WebSocketServer({ server: http, maxPayload: maxPayload(opts.pieceFloats), perMessageDeflate: false });
    this.wss.on('connection', (ws, req) => this.handshake(ws, req));
  }

  static async listen(opts: ServerOptions): Promise<NodeServer> {
    const http = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }) : createHttpServer();
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(opts.port, opts.host, () => resolve());
    });
    const { port } = http.address() as AddressInfo;
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    return new NodeServer(opts, http, `${opts.tls ? 'wss' : 'ws'}://${host}:${port}`);
  }

  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }

  private handshake(ws: WebSocket, req: IncomingMessage): void {
    const address = req.socket.remoteAddress ?? '?';
    // Whatever a peer sends, a socket error must never reach the process as an unhandled event.
    ws.on('error', () => ws.terminate());
    if (this.handshakes >= MAX_HANDSHAKES) {
      ws.terminate();
      return;
    }
    this.handshakes += 1;
    const nonce = newNonce();
    let done = false;
    const finish = () => {
      if (!done) this.handshakes -= 1;
      done = true;
      clearTimeout(timer);
    };
    const refuse = (reason: string) => {
      finish();
      this.opts.log(`refused a node from ${address}: ${reason}`);
      ws.send(controlFrame({ kind: 'refused', reason }), () => ws.close(1008, 'refused'));
    };
    const timer = setTimeout(() => refuse(`no handshake within ${HANDSHAKE_MS / 1000} s`), HANDSHAKE_MS);
    ws.on('error', () => finish());
    ws.on('close', () => finish());
    ws.once('message', (data: Buffer, isBinary: boolean) => {
      if (done) return;
      let hello: HelloMessage;
      try {
        const frame = decodeFrame(isBinary ? data : Buffer.from(data));
        if (frame.type !== FRAME.control) throw new ProtocolError('expected a hello message first');
        const message = parseNodeMessage(frame.message);
        if (message.kind !== 'hello') throw new ProtocolError(`expected a hello message first, got "${message.kind}"`);
        hello = message;
      } catch (err) {
        refuse(`malformed handshake (${(err as Error).message})`);
        return;
      }
      if (hello.protocol !== PROTOCOL_VERSION) {
        refuse(`protocol version mismatch: the node speaks version ${hello.protocol}, this coordinator ${PROTOCOL_VERSION} (install the same gpt-ddp version on both)`);
        return;
      }
      // A hello is bound to this connection's fresh nonce, so a replayed one fails its proof; the
      // nonces of accepted hellos are kept (only those, so strangers cannot grow the set) to say so.
      const key = Buffer.from(hello.nonce).toString('hex');
      if (this.seenNonces.has(key)) {
        refuse('replayed handshake');
        return;
      }
      if (!proofMatches(proof(this.opts.token, 'node', nonce, hello.nonce), hello.proof)) {
        refuse('wrong token (check --token-file)');
        return;
      }
      this.seenNonces.add(key);
      finish();
      const member = this.nextMember++;
      ws.send(controlFrame({
        kind: 'welcome', proof: proof(this.opts.token, 'coordinator', hello.nonce, nonce), member, model: this.opts.layout.config,
        wire: this.opts.wire, pieceFloats: this.opts.pieceFloats,
      }));
      const { layout, wire, pieceFloats, heartbeatTimeoutSec } = this.opts;
      const pieces = gradientPieces(gradientRegions(layout), pieceFloats);
      this.joined.push(new RemoteNode(ws, { id: member, kind: 'node', host: `${hello.host}@${address}`, threads: hello.threads, backend: hello.backend, kernels: '?' },
        { layout, pieces, wire, pieceFloats, heartbeatTimeoutMs: heartbeatTimeoutSec * 1000 }));
      this.waiters.splice(0).forEach((wake) => wake());
    });
    ws.send(controlFrame({ kind: 'challenge', protocol: PROTOCOL_VERSION, nonce }));
  }

  /** Nodes that authenticated since the last call (still open), for the cluster to admit. */
  takeJoined(): RemoteNode[] {
    return this.joined.splice(0).filter((n) => !n.closed);
  }

  /** Resolves true once a node is waiting to be admitted, false after `timeoutMs` or on `signal`. */
  async waitForJoin(timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.joined.some((n) => !n.closed)) return true;
    if (signal?.aborted) return false;
    return new Promise((resolve) => {
      const settle = (joined: boolean) => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', abort);
        const i = this.waiters.indexOf(wake);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(joined);
      };
      const wake = () => settle(true);
      const abort = () => settle(false);
      const timer = Number.isFinite(timeoutMs) ? setTimeout(abort, Math.max(0, timeoutMs)) : null;
      signal?.addEventListener('abort', abort);
      this.waiters.push(wake);
    });
  }

  /** Ends the nodes still waiting to be admitted (their goodbye flushed), then closes the port. */
  async close(reason: string): Promise<void> {
    await Promise.all(this.joined.splice(0).map((n) => n.shutdown(reason)));
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }
}
