import { FRAME, ProtocolError, stateTensors, type TensorHeader } from '../comm/frames.js';
import type { WelcomeMessage } from '../comm/protocol.js';
import type { PoolStarted, ThreadPool } from '../comm/threads.js';
import type { AdamWOptions } from '../math/adamw.js';
import { StateLoad } from './state-load.js';
import { StepInbox } from './step-inbox.js';

/**
 * A node's copy of the run's weights and AdamW moments, in its threads' shared memory: loaded from
 * state frames, then advanced one step at a time with the step's reduced gradient by the same
 * AdamW arithmetic as the coordinator. The inbox's step is the weights' version (kept nowhere
 * else; the pool publishes it to the threads).
 */
export class Mirror {
  /** The weights and moments on their way, from the state message to its state-end. */
  private loading: StateLoad | null = null;
  /** What has arrived of the step's reduced gradient, from the weights' arrival on. */
  private current: StepInbox | null = null;

  /** The threads starting while the weights arrive (its failure surfaces at the state-end). */
  private readonly started: Promise<PoolStarted>;

  constructor(private readonly pool: ThreadPool, private readonly welcome: WelcomeMessage) {
    this.started = pool.start();
    this.started.catch(() => {});
  }

  /** The step's inbox; the weights must have arrived (no task may come before). */
  inbox(): StepInbox {
    if (!this.current) throw new ProtocolError('a task before the weights arrived');
    return this.current;
  }

  /** The state message: the weights and moments of `version` follow as state frames. */
  state(version: number): void {
    const { weights, moments } = this.pool;
    this.loading = new StateLoad(version, stateTensors(weights, moments), this.welcome.pieceFloats);
  }

  /** The state-end: once every frame came and the threads have started, the weights are theirs to use; their backend and kernels. */
  async stateEnd(version: number): Promise<PoolStarted> {
    if (this.loading?.version !== version) throw new ProtocolError('state-end without its state');
    this.loading.end();
    this.loading = null;
    const threads = await this.started;
    this.current = this.newInbox(version);
    this.pool.publish(version);
    return threads;
  }

  /** A state frame, or a frame of the step's reduced gradient. */
  frame(h: TensorHeader, payload: Buffer): void {
    if (h.type === FRAME.state) {
      if (!this.loading) throw new ProtocolError('unexpected state frame');
      this.loading.frame(h, payload);
    } else if (h.type === FRAME.reduced || h.type === FRAME.peer || h.type === FRAME.reducedRows) {
      const inbox = this.current;
      if (!inbox) throw new ProtocolError('a gradient frame before the weights');
      if (h.type === FRAME.reduced) inbox.sum(h, payload);
      else if (h.type === FRAME.peer) inbox.peer(h, payload);
      else inbox.rows(h, payload);
    } else {
      throw new ProtocolError(`a coordinator may not send frame type ${h.type}`);
    }
  }

  /** Applies `step`'s reduced gradient once `computing` (this node's last task) is done; the weights are then of step + 1. */
  async commit(step: number, gradScale: number, adam: AdamWOptions, computing: Promise<void>): Promise<void> {
    const inbox = this.inbox();
    if (step !== inbox.step) throw new ProtocolError(`commit of step ${step} while the weights are of step ${inbox.step}`);
    const rows = inbox.complete();
    await computing;
    await this.pool.applyStep(step, gradScale, adam, rows);
    this.current = this.newInbox(step + 1);
    this.pool.publish(step + 1);
  }

  private newInbox(step: number): StepInbox {
    const { model, pieceFloats, wire } = this.welcome;
    return new StepInbox(step, this.pool.reduced, { pieces: this.pool.pieces, model, pieceFloats, wire });
  }
}
