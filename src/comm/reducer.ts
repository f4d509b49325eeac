import type { Piece } from '../math/pieces.js';
import { addInto, addRows, type SparseRows } from '../math/reduce.js';
import { nodeKey, treeSplit, treeSum, type TreeNode } from '../math/tree.js';
import type { Partial } from './protocol.js';

interface Stored<T> {
  task: number;
  node: TreeNode;
  value: T;
}

/** Partials of one piece (or of the rows) until they cover every slot. */
class Cover<T> {
  private readonly parts = new Map<string, Stored<T>>();
  done = false;

  constructor(private readonly slotCount: number) {}

  /** Adds a partial; returns the tree-ordered sum once every slot is covered. */
  add(entry: Stored<T>, add: (a: T, b: T) => T): T | null {
    if (this.done) return null;
    for (const p of this.parts.values()) {
      if (entry.node[0] < p.node[1] && p.node[0] < entry.node[1]) {
        throw new Error(`partial sum for slots [${entry.node.join(', ')}) overlaps one already received`);
      }
    }
    this.parts.set(nodeKey(entry.node), entry);
    if (!this.covers(0, this.slotCount)) return null;
    const sum = treeSum([0, this.slotCount], (n) => this.parts.get(nodeKey(n))?.value, add);
    this.parts.clear();
    this.done = true;
    return sum;
  }

  private covers(lo: number, hi: number): boolean {
    if (this.parts.has(nodeKey([lo, hi]))) return true;
    if (hi - lo === 1) return false;
    const mid = treeSplit(lo, hi);
    return this.covers(lo, mid) && this.covers(mid, hi);
  }

  drop(task: number): void {
    for (const [k, p] of this.parts) if (p.task === task) this.parts.delete(k);
  }
}

/**
 * Reduces one step's partial sums in the canonical tree order, piece by piece as they arrive.
 * A piece is summed once partials covering every slot are in; the sum goes to `onPiece` (it may
 * reuse the first partial's memory). Partials of a task that failed are dropped from pieces not
 * yet summed, so the slots' new owners can send theirs: a summed piece does not change, since any
 * worker computes a slot's gradient to the same bits.
 */
export class StepReducer {
  private readonly dense: Array<Cover<Float32Array>>;
  private readonly rows: Cover<SparseRows>;
  private remaining: number;

  constructor(
    slotCount: number, private readonly pieces: Piece[], private readonly width: number,
    private readonly onPiece: (piece: Piece, sum: Float32Array) => void,
    private readonly onRows: (sum: SparseRows) => void,
  ) {
    this.dense = pieces.map(() => new Cover<Float32Array>(slotCount));
    this.rows = new Cover<SparseRows>(slotCount);
    this.remaining = pieces.length + 1;
  }

  get complete(): boolean {
    return this.remaining === 0;
  }

  add(task: number, p: Partial): void {
    if (p.kind === 'rows') {
      const sum = this.rows.add({ task, node: p.node, value: p.rows }, (a, b) => addRows(a, b, this.width));
      if (sum) {
        this.remaining -= 1;
        this.onRows(sum);
      }
      return;
    }
    const sum = this.dense[p.piece]!.add({ task, node: p.node, value: p.data }, addInto);
    if (sum) {
      this.remaining -= 1;
      this.onPiece(this.pieces[p.piece]!, sum);
    }
  }

  /** Forgets a failed task's partials in everything not yet summed. */
  drop(task: number): void {
    for (const c of this.dense) c.drop(task);
    this.rows.drop(task);
  }
}
