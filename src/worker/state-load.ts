import { denseValues, ProtocolError, type TensorHeader } from '../comm/frames.js';

/**
 * The weights and AdamW moments of one version arriving as state frames (b: which tensor, d: which
 * piece of it), written where they belong; each frame once, and all of them before the state-end.
 */
export class StateLoad {
  private readonly got = new Set<string>();

  constructor(readonly version: number, private readonly tensors: Float32Array[], private readonly pieceFloats: number) {}

  frame(h: TensorHeader, payload: Buffer): void {
    const target = this.tensors[h.b];
    const start = h.d * this.pieceFloats;
    const key = `${h.b}:${h.d}`;
    if (!target || h.a !== this.version || start >= target.length || this.got.has(key)) throw new ProtocolError('unexpected state frame');
    target.set(denseValues(h, payload, Math.min(this.pieceFloats, target.length - start), 'fp32'), start);
    this.got.add(key);
  }

  /** Checks the state-end: every frame of every tensor came. */
  end(): void {
    const frames = this.tensors.reduce((n, t) => n + Math.ceil(t.length / this.pieceFloats), 0);
    if (this.got.size !== frames) throw new ProtocolError(`state-end after ${this.got.size} of ${frames} state frames`);
  }
}
