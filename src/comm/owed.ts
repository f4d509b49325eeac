import type { Piece } from '../math/pieces.js';
import { maximalSubtrees, nodeKey, type TreeNode } from '../math/tree.js';
import type { ParamLayout } from '../model/layout.js';
import { denseValues, ProtocolError, RowsAssembler, rowsPerFrame, type TensorHeader } from './frames.js';
import type { Partial, SlotStats, WireFormat } from './protocol.js';
import type { TrainWork } from './threads.js';

export interface OwedContext {
  layout: ParamLayout;
  pieces: Piece[];
  wire: WireFormat;
  pieceFloats: number;
}

/** A subtree whose partial sums a node owes: the pieces received so far and its rows. */
interface SubtreeState {
  node: TreeNode;
  pieces: Set<number>;
  rows: RowsAssembler;
}

/**
 * What a node owes for one train task: for each maximal subtree of its slots, every piece of the
 * partial sum once and the token-embedding rows (only rows of those slots' tokens); then a result
 * per slot. Each frame is checked as it comes: anything not owed is a ProtocolError.
 */
export class OwedSums {
  private readonly subtrees: Map<string, SubtreeState>;

  constructor(readonly task: number, readonly work: TrainWork, private readonly ctx: OwedContext) {
    const { embDim, vocabSize } = ctx.layout.config;
    const perFrame = rowsPerFrame(ctx.pieceFloats, embDim);
    this.subtrees = new Map(maximalSubtrees(work.slots.map((s) => s.slot), work.slotCount).map((node): [string, SubtreeState] => {
      const tokens = new Set(work.slots.filter((w) => w.slot >= node[0] && w.slot < node[1]).flatMap((w) => w.samples.flatMap((s) => [...s.input])));
      const rows = new RowsAssembler(embDim, vocabSize, Math.max(1, Math.ceil(tokens.size / perFrame)), tokens);
      return [nodeKey(node), { node, pieces: new Set(), rows }];
    }));
  }

  /** A piece of a subtree's partial sum (the header names the subtree [b, c) and the piece d). */
  dense(h: TensorHeader, payload: Buffer): Partial {
    const s = this.subtree(h);
    const piece = this.ctx.pieces[h.d];
    if (!piece) throw new ProtocolError(`piece ${h.d} does not exist`);
    if (s.pieces.has(h.d)) throw new ProtocolError(`piece ${h.d} of slots [${h.b}, ${h.c}) sent twice`);
    const data = denseValues(h, payload, piece.end - piece.start, this.ctx.wire);
    s.pieces.add(h.d);
    return { kind: 'dense', node: s.node, piece: h.d, data };
  }

  /** A frame of a subtree's rows; the rows once its last frame is in. */
  rows(h: TensorHeader, payload: Buffer): Partial | null {
    const s = this.subtree(h);
    const rows = s.rows.add(h, payload);
    return rows ? { kind: 'rows', node: s.node, rows } : null;
  }

  /** Checks the node's report that the task is done: every sum came, and one right-sized result per slot. */
  checkResults(results: SlotStats[]): void {
    const { task } = this;
    for (const s of this.subtrees.values()) {
      if (s.pieces.size !== this.ctx.pieces.length || !s.rows.done) throw new ProtocolError(`task ${task} reported done before all its partial sums arrived`);
    }
    const bySlot = new Map(results.map((r) => [r.slot, r]));
    for (const w of this.work.slots) {
      const r = bySlot.get(w.slot);
      const tokens = w.samples.reduce((n, x) => n + x.target.length, 0);
      if (!r || r.tokens !== tokens || r.sampleLoss.length !== w.samples.length) throw new ProtocolError(`task ${task}: wrong result for slot ${w.slot}`);
    }
    if (bySlot.size !== this.work.slots.length) throw new ProtocolError(`task ${task}: results for slots it was not given`);
  }

  private subtree(h: TensorHeader): SubtreeState {
    const s = this.subtrees.get(nodeKey([h.b, h.c]));
    if (!s) throw new ProtocolError(`frame for slots [${h.b}, ${h.c}), which are not this node's to sum in task ${h.a}`);
    return s;
  }
}
