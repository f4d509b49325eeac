import { hostname } from 'node:os';
import type { WebSocket } from 'ws';
import { newNonce, proof, proofMatches } from '../comm/auth.js';
import {
  controlFrame, decodeFrame, denseFrame, FRAME, framePool, PIECE_FLOATS, ProtocolError, rowsFrame, rowsPerFrame, splitRows,
  type FramePool, type TensorHeader,
} from '../comm/frames.js';
import { checkSamples, parseCoordinatorMessage } from '../comm/messages.js';
import { PROTOCOL_VERSION, type CoordinatorMessage, type NodeMessage, type Partial, type WelcomeMessage } from '../comm/protocol.js';
import { ThreadPool } from '../comm/threads.js';
import { buildLayout } from '../model/layout.js';
import { errorMessage } from '../util/errors.js';
import { connectFailure, notCoordinator } from './connect.js';
import { Mirror } from './mirror.js';
import { NodeFaults } from './node-faults.js';
import type { NodeArgs, NodeExit } from './node.js';
import type { StepInbox } from './step-inbox.js';

/** How one connection to the coordinator ended. */
export interface SessionEnd {
  code: NodeExit;
  line: string;
  /**
   * The coordinator could not be reached (no answer: refused, reset, unreachable), went away
   * (close code 1001 or 1006) or went silent. Not a refusal, a bad frame either way, or a
   * deliberate drop (1008): a rejoin would meet those again.
   */
  lost: boolean;
  /** This node took part in at least one committed step: a rejoin after this is progress, not a loop. */
  committed: boolean;
}

/** Connection errors that mean nobody answers (yet) at the address: worth trying again. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EAI_AGAIN', 'EPIPE']);
/** Close codes of a coordinator that went away (shut down without a goodbye, crashed, network gone). */
const GONE = new Set([1001, 1006]);

const SILENCE_MS = 60_000;
/** An address that takes longer to open a connection does not answer: lost, like a refused one. */
const HANDSHAKE_MS = 30_000;

/**
 * One connection to the coordinator: the handshake, the weights, the tasks and the commits, until
 * the run ends, the node leaves, or the coordinator is lost, refuses or fails it.
 */
export class NodeSession {
  private pool: ThreadPool | null = null;
  private welcome: WelcomeMessage | null = null;
  private mirror: Mirror | null = null;
  private frames: FramePool | null = null;
  private nonce = newNonce();
  private challenge: Uint8Array | null = null;
  /** Set as soon as the coordinator's goodbye arrives, even while earlier messages are still handled. */
  private shutdownReason: string | null = null;
  private computing: Promise<void> = Promise.resolve();
  private queue: Promise<void> = Promise.resolve();
  private lastHeard = Date.now();
  private readonly watchdog: NodeJS.Timeout;
  private readonly opening: NodeJS.Timeout;
  private readonly faults: NodeFaults;
  private exited = false;
  private opened = false;
  private committed = false;

  constructor(
    private readonly ws: WebSocket, url: URL, private readonly args: NodeArgs, private readonly log: (line: string) => void,
    private readonly resolveEnd: (end: SessionEnd) => void,
  ) {
    this.faults = new NodeFaults(args.fault);
    ws.on('message', (data: Buffer) => {
      this.lastHeard = Date.now();
      this.noteShutdown(data);
      this.queue = this.queue.then(() => this.onMessage(data)).catch((err: unknown) => this.fail(err));
    });
    ws.on('ping', () => {
      this.lastHeard = Date.now();
    });
    this.opening = setTimeout(() => this.exit(1, `cannot reach the coordinator at ${args.connect}: no answer within ${HANDSHAKE_MS / 1000} s`, true), HANDSHAKE_MS);
    ws.on('open', () => {
      this.opened = true;
      clearTimeout(this.opening);
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      // After the connection is open, ws reports only frames it cannot accept.
      if (this.opened) void this.exit(1, `the coordinator sent a bad frame: ${err.message}`);
      else void this.exit(1, connectFailure(err, url, args.connect), UNREACHABLE.has(err.code ?? ''));
    });
    // Something answered HTTP but did not upgrade: not a coordinator, and trying again would meet it again.
    ws.on('unexpected-response', (_req, res) => void this.exit(1, notCoordinator(args.connect, res.statusCode)));
    ws.on('close', (code, reason) => {
      if (this.shutdownReason !== null) void this.exit(0, `the coordinator ended the run: ${this.shutdownReason}`);
      else void this.exit(1, `lost the coordinator (connection closed, code ${code}${reason.length ? `: ${reason.toString()}` : ''})`, GONE.has(code));
    });
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_MS) this.exit(1, `the coordinator has been silent for ${SILENCE_MS / 1000} s`, true);
    }, 1000);
  }

  /** Notes a shutdown message before the queue gets to it, so a close right after it is not a loss. */
  private noteShutdown(data: Buffer): void {
    if (data[0] !== FRAME.control || data.length > 4096) return;
    try {
      const frame = decodeFrame(data);
      const m = frame.type === FRAME.control ? parseCoordinatorMessage(frame.message) : null;
      if (m?.kind === 'shutdown') this.shutdownReason = m.reason;
    } catch {
      // The queue reports malformed messages.
    }
  }

  private send(message: NodeMessage): void {
    this.ws.send(controlFrame(message));
  }

  /** Ends the session (idempotent); `lost` when the coordinator is gone rather than refusing or failing us. */
  private async exit(code: NodeExit, line: string, lost = false): Promise<void> {
    if (this.exited) return;
    this.exited = true;
    clearInterval(this.watchdog);
    clearTimeout(this.opening);
    // A gone coordinator would not answer a close handshake, and the socket would hold this session (and its weights) meanwhile.
    if (this.ws.readyState === this.ws.OPEN && !lost) this.ws.close(1000);
    else this.ws.terminate();
    try {
      await this.pool?.close();
    } finally {
      this.resolveEnd({ code, line, lost, committed: this.committed });
    }
  }

  private fail(err: unknown): void {
    void this.exit(1, err instanceof ProtocolError ? `the coordinator sent a bad message: ${errorMessage(err)}` : `failed: ${errorMessage(err)}`);
  }

  /** Ctrl-C: tell the coordinator, which gives this node's slots to others, then go (nothing once the session is ending). */
  leave(why: string): void {
    if (this.exited) return;
    // Before the welcome this node is no member: the coordinator expects a hello, not a leave.
    if (!this.welcome) {
      void this.exit(130, `${why} before joining the run at ${this.args.connect} (no handshake completed)`);
      return;
    }
    if (this.ws.readyState === this.ws.OPEN) this.send({ kind: 'leave', reason: why });
    void this.exit(130, `left the run (${why})`);
  }

  private async onMessage(data: Buffer): Promise<void> {
    if (this.exited) return;
    const frame = decodeFrame(data);
    if (frame.type !== FRAME.control) return this.onTensor(frame.header, frame.payload);
    const m = parseCoordinatorMessage(frame.message);
    if (!this.welcome && m.kind !== 'challenge' && m.kind !== 'welcome' && m.kind !== 'refused') throw new ProtocolError(`"${m.kind}" before the handshake`);
    await this.onControl(m);
  }

  private async onControl(m: CoordinatorMessage): Promise<void> {
    switch (m.kind) {
      case 'challenge':
        if (m.protocol !== PROTOCOL_VERSION) {
          return this.exit(2, `the coordinator speaks protocol version ${m.protocol}, this node ${PROTOCOL_VERSION}: install the same gpt-ddp version on both`);
        }
        this.challenge = m.nonce;
        this.send({
          kind: 'hello', protocol: PROTOCOL_VERSION, nonce: this.nonce, proof: proof(this.args.token, 'node', m.nonce, this.nonce),
          host: hostname(), threads: this.args.threads, backend: this.args.backend,
        });
        return;
      case 'refused':
        return this.exit(2, `the coordinator refused this node: ${m.reason}`);
      case 'welcome':
        return this.onWelcome(m);
      case 'state':
        return this.mirror!.state(m.version);
      case 'state-end':
        return this.onStateEnd(m.version);
      case 'train':
        return this.onTrain(m);
      case 'commit':
        this.committed = true;
        return this.mirror!.commit(m.step, m.gradScale, m.adam, this.computing);
      case 'loss': {
        const { pool } = this.ready();
        checkSamples(m.slots, this.welcome!.model);
        await this.computing;
        const results = await pool.losses(m.version, m.slots, m.chunk);
        this.send({ kind: 'losses', task: m.task, results });
        return;
      }
      case 'generate': {
        await this.computing;
        const tokens = await this.ready().pool.generate(m.version, m.prompt, m.maxNewTokens);
        this.send({ kind: 'generated', task: m.task, tokens });
        return;
      }
      case 'checksum': {
        await this.computing;
        const hash = await this.ready().pool.hash();
        if (hash !== m.hash) this.log(`weights after step ${m.version} differ from the coordinator's: this node will be dropped`);
        this.send({ kind: 'checksum-reply', version: m.version, hash });
        return;
      }
      case 'shutdown':
        return this.exit(0, `the coordinator ended the run: ${m.reason}`);
    }
  }

  private onWelcome(m: WelcomeMessage): void {
    if (!this.challenge || !proofMatches(proof(this.args.token, 'coordinator', this.nonce, this.challenge), m.proof)) {
      void this.exit(2, 'the coordinator could not prove it holds the token: wrong --token-file, or not the coordinator you meant');
      return;
    }
    if (m.pieceFloats > PIECE_FLOATS) throw new ProtocolError(`pieces of ${m.pieceFloats} floats exceed the limit of ${PIECE_FLOATS}`);
    this.welcome = m;
    const layout = buildLayout(m.model);
    this.frames = framePool(m.pieceFloats);
    this.pool = new ThreadPool({ threads: this.args.threads, layout, backend: this.args.backend, kernels: this.args.kernels, withModel: true, pieceFloats: m.pieceFloats });
    this.mirror = new Mirror(this.pool, m);
    this.log(`joined ${this.args.connect} as node ${m.member}: ${layout.totalSize.toLocaleString('en-US')}-parameter model, ${this.args.threads} thread${this.args.threads === 1 ? '' : 's'}, ${m.wire} gradients; loading the weights`);
  }

  /** The threads and the step's inbox, once the weights have arrived (no task passes onMessage before the welcome). */
  private ready(): { pool: ThreadPool; inbox: StepInbox } {
    return { pool: this.pool!, inbox: this.mirror!.inbox() };
  }

  private async onStateEnd(version: number): Promise<void> {
    const { backend, kernels } = await this.mirror!.stateEnd(version);
    this.send({ kind: 'ready', version, backend, kernels });
    this.log(`weights of step ${version} loaded; backend ${backend}, kernels: ${kernels}; training`);
  }

  private onTensor(h: TensorHeader, payload: Buffer): void {
    if (!this.mirror) throw new ProtocolError('a tensor frame before the handshake');
    this.mirror.frame(h, payload);
  }

  private onTrain(m: Extract<CoordinatorMessage, { kind: 'train' }>): void {
    const { pool, inbox } = this.ready();
    checkSamples(m.slots, this.welcome!.model);
    if (m.step !== inbox.step) throw new ProtocolError(`a task for step ${m.step} while the weights are of step ${inbox.step}`);
    const { wire, pieceFloats, model } = this.welcome!;
    const frames = this.frames!;
    const fault = this.faults.forStep(m.step);
    inbox.task(m.slots.map((s) => s.slot), m.slotCount);
    const sink = (p: Partial) => {
      if (!fault.allow(p)) return;
      if (p.kind === 'dense') {
        const frame = denseFrame({ type: FRAME.partial, wire, a: m.task, b: p.node[0], c: p.node[1], d: p.piece, e: 0 }, p.data, frames.take());
        this.ws.send(frame, () => frames.give(frame.buffer));
        inbox.ours(p.node, p.piece, p.data);
      } else {
        const parts = splitRows(p.rows, rowsPerFrame(pieceFloats, model.embDim), model.embDim);
        parts.forEach((part, i) => this.ws.send(rowsFrame({ type: FRAME.partialRows, a: m.task, b: p.node[0], c: p.node[1], d: i, e: parts.length }, part)));
      }
    };
    this.computing = pool.train({ step: m.step, slotCount: m.slotCount, slots: m.slots, dropout: m.dropout }, sink).then((results) => {
      if (!fault.silent) this.send({ kind: 'trained', task: m.task, results });
    }, (err: unknown) => {
      this.send({ kind: 'failed', task: m.task, reason: errorMessage(err) });
      throw err;
    });
    this.computing.catch((err: unknown) => this.fail(err));
  }
}
