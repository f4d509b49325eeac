import type { Piece } from '../math/pieces.js';
import { addInto, addRows, addTo, type SparseRows } from '../math/reduce.js';
import { nodeKey, treeSplit, treeSum, type TreeNode } from '../math/tree.js';
import type { Partial } from './protocol.js';

interface Stored<T> {
  task: number;
  node: TreeNode;
  value: T;
  /** The value is a copy in the reducer's store, given back once summed or dropped. */
  kept: boolean;
}

/** Partials of one piece (or of the rows) until they cover every slot. */
class Cover<T> {
  private readonly parts = new Map<string, Stored<T>>();
  done = false;

  constructor(private readonly slotCount: number) {}

  /**
   * Adds a partial, stored as `keep` makes it (a copy) when given; returns every part once the
   * slots are covered. A partial of a piece already summed is ignored (a recomputed slot).
   */
  add(task: number, node: TreeNode, value: T, keep?: (v: T) => T): Array<Stored<T>> | null {
    if (this.done) return null;
    for (const p of this.parts.values()) {
      if (node[0] < p.node[1] && p.node[0] < node[1]) {
        throw new Error(`partial sum for slots [${node.join(', ')}) overlaps one already received`);
      }
    }
    this.parts.set(nodeKey(node), keep ? { task, node, value: keep(value), kept: true } : { task, node, value, kept: false });
    if (!this.covers(0, this.slotCount)) return null;
    const parts = [...this.parts.values()];
    this.parts.clear();
    this.done = true;
    return parts;
  }

  private covers(lo: number, hi: number): boolean {
    if (this.parts.has(nodeKey([lo, hi]))) return true;
    if (hi - lo === 1) return false;
    const mid = treeSplit(lo, hi);
    return this.covers(lo, mid) && this.covers(mid, hi);
  }

  /** Forgets a task's parts; returns them. */
  drop(task: number): Array<Stored<T>> {
    const dropped = [...this.parts].filter(([, p]) => p.task === task);
    for (const [k] of dropped) this.parts.delete(k);
    return dropped.map(([, p]) => p);
  }
}

/** Memory for copies of partials the reducer may not hold where they are. */
interface PartialStore {
  /** A copy of `values` that stays valid until released. */
  keep(values: Float32Array): Float32Array;
  release(kept: Float32Array): void;
}

/**
 * Reduces one step's partial sums in the canonical tree order, piece by piece as they arrive.
 * A piece is summed once partials covering every slot are in: straight into `target(piece)`
 * (the root's two halves added there), then `onPiece` is told. Partials of a task that failed are
 * dropped from pieces not yet summed, so the slots' new owners can send theirs: a summed piece
 * does not change, since any worker computes a slot's gradient to the same bits.
 */
export class StepReducer {
  private readonly dense: Array<Cover<Float32Array>>;
  private readonly rows: Cover<SparseRows>;
  private remaining: number;

  constructor(
    private readonly slotCount: number, private readonly pieces: Piece[], private readonly width: number,
    private readonly target: (piece: Piece) => Float32Array,
    private readonly onPiece: (piece: Piece, sum: Float32Array) => void,
    private readonly onRows: (sum: SparseRows) => void,
    private readonly store: PartialStore,
  ) {
    this.dense = pieces.map(() => new Cover<Float32Array>(slotCount));
    this.rows = new Cover<SparseRows>(slotCount);
    this.remaining = pieces.length + 1;
  }

  get complete(): boolean {
    return this.remaining === 0;
  }

  /**
   * A partial sum of task `task`. With `transient`, its dense values are copied to the store at
   * once, so the message they came in is let go at once (on the coordinator, reading a node's
   * frame in place until its piece was summed doubled V8's full collections: dearer than the
   * copy); otherwise they are used where they are, and may be written over by the sum.
   */
  add(task: number, p: Partial, transient = false): void {
    if (p.kind === 'rows') {
      const parts = this.rows.add(task, p.node, p.rows);
      if (parts) {
        this.remaining -= 1;
        this.onRows(this.sum(parts, (a, b) => addRows(a, b, this.width)));
      }
      return;
    }
    const parts = this.dense[p.piece]!.add(task, p.node, p.data, transient ? (v) => this.store.keep(v) : undefined);
    if (!parts) return;
    this.remaining -= 1;
    const piece = this.pieces[p.piece]!;
    const out = this.target(piece);
    const whole = parts.find((s) => s.node[0] === 0 && s.node[1] === this.slotCount);
    if (whole) {
      out.set(whole.value);
    } else {
      const mid = treeSplit(0, this.slotCount);
      addTo(out, this.sum(parts, addInto, [0, mid]), this.sum(parts, addInto, [mid, this.slotCount]));
    }
    this.release(parts);
    this.onPiece(piece, out);
  }

  /** Forgets a failed task's partials in everything not yet summed. */
  drop(task: number): void {
    for (const c of this.dense) this.release(c.drop(task));
    this.rows.drop(task);
  }

  /** The tree-ordered sum over `root` (by default every slot) of the parts under it. */
  private sum<T>(parts: Array<Stored<T>>, add: (a: T, b: T) => T, root: TreeNode = [0, this.slotCount]): T {
    const byNode = new Map(parts.map((s) => [nodeKey(s.node), s.value]));
    return treeSum(root, (n) => byNode.get(nodeKey(n)), add);
  }

  private release(parts: Array<Stored<Float32Array>>): void {
    for (const s of parts) if (s.kept) this.store.release(s.value);
  }
}
