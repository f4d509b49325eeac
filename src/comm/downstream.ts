import type { Piece } from '../math/pieces.js';
import { maximalSubtrees, rootComplement, type TreeNode } from '../math/tree.js';
import { peerFrame, reducedFrame, type FramePool } from './frames.js';
import type { WireFormat } from './protocol.js';

const sameNode = (a: TreeNode, b: TreeNode) => a[0] === b[0] && a[1] === b[1];

/** Where frames for one node go (a RemoteNode); `done` once the frame's memory may be reused. */
export interface FrameSink {
  send(frame: Buffer, done?: () => void): void;
}

/**
 * What of one step's gradient each node is sent, piece by piece. A piece's sum exists only once
 * the slowest member's partial is in, so a link that carries the sums idles while one upload runs
 * ahead of another, and catches up only after the last upload ends. A node whose first task of
 * the step is one half of the reduction tree needs only the other half's partial sum to make the
 * sum itself (two halves add to the same bits in either order), so it is sent that partial, a peer
 * frame, as soon as it arrives: as many bytes as the sum, without the wait. Every other piece a
 * node lacks, and every piece of the other nodes, is sent as the sum.
 */
export class Downstream<N extends FrameSink> {
  /** Nodes sent peer frames, and the half whose partial sums they get. */
  private readonly halves = new Map<N, TreeNode>();
  private readonly launched = new Set<N>();
  /** Per piece, the nodes that got it as a peer frame, and the task whose partial it was. */
  private readonly peered: Array<Map<N, number>>;
  /** Tasks that failed: a peer frame of theirs may differ from the partial that was summed. */
  private readonly failed = new Set<number>();
  /** Pieces whose sum is out: every live node has them (a late partial, recomputed, is not sent). */
  private readonly summed = new Set<number>();

  constructor(
    private readonly step: number, private readonly slotCount: number, private readonly wire: WireFormat,
    pieces: Piece[], private readonly frames: FramePool,
  ) {
    this.peered = pieces.map(() => new Map());
  }

  /** A task for `slots` goes to `node`: only its first one of the step can make it a half's owner. */
  launch(node: N, slots: number[]): void {
    const own = maximalSubtrees(slots, this.slotCount);
    const other = !this.launched.has(node) && own.length === 1 ? rootComplement(own[0]!, this.slotCount) : null;
    if (other) this.halves.set(node, other);
    else this.halves.delete(node);
    this.launched.add(node);
  }

  /**
   * Task `task`'s partial sum of `subtree` arrived (from a node, or null: our threads): forwarded to
   * the owner of the other half among the `live` nodes. `exact` says the values are what they
   * would be after crossing the wire (always true for fp32).
   */
  partial(task: number, from: N | null, live: readonly N[], subtree: TreeNode, piece: number, values: Float32Array, exact: boolean): void {
    if (!exact || this.summed.has(piece)) return;
    for (const [to, other] of this.halves) {
      if (to === from || !live.includes(to) || !sameNode(other, subtree) || this.peered[piece]!.has(to)) continue;
      this.peered[piece]!.set(to, task);
      const frame = peerFrame(this.step, subtree, piece, values, this.wire, this.frames.take());
      to.send(frame, () => this.frames.give(frame.buffer));
    }
  }

  /**
   * A task failed: its partials of pieces not yet summed are dropped and recomputed, maybe to other
   * bits (a different matmul provider), so the nodes that got them as peer frames get the sum too.
   */
  drop(task: number): void {
    this.failed.add(task);
  }

  /** A piece's sum is ready: sent to the nodes that lack it (no peer frame, or a failed task's). */
  sum(nodes: readonly N[], piece: Piece, values: Float32Array): void {
    this.summed.add(piece.index);
    const peered = this.peered[piece.index]!;
    const to = nodes.filter((n) => !peered.has(n) || this.failed.has(peered.get(n)!));
    if (to.length === 0) return;
    const frame = reducedFrame(this.step, piece.index, values, this.wire, this.frames.take());
    let unsent = to.length;
    for (const n of to) n.send(frame, () => --unsent === 0 && this.frames.give(frame.buffer));
  }
}
