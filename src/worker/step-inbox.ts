import { denseValues, ProtocolError, RowsAssembler, rowsPerFrame, type TensorHeader } from '../comm/frames.js';
import type { WireFormat } from '../comm/protocol.js';
import { roundToBf16 } from '../math/bf16.js';
import type { Piece } from '../math/pieces.js';
import { addInto, addTo, type SparseRows } from '../math/reduce.js';
import { maximalSubtrees, rootComplement, type TreeNode } from '../math/tree.js';
import type { ModelConfig } from '../model/config.js';

export interface InboxContext {
  pieces: Piece[];
  model: ModelConfig;
  pieceFloats: number;
  wire: WireFormat;
}

/**
 * What a node has of one step's reduced gradient, in `reduced`: each piece of the sum, as a sum
 * frame or as our half's partial plus the other half's from a peer frame (see Downstream), and the
 * token-embedding rows. Every frame is checked against what the coordinator may send.
 */
export class StepInbox {
  private readonly done = new Set<number>();
  private readonly rowFrames: RowsAssembler;
  private rowSum: SparseRows | null = null;
  private tasks = 0;
  /** When our first task of the step is half the tree: our partials, and the pieces of the other half's that came. */
  private half: { own: TreeNode; other: TreeNode; ours: Map<number, Float32Array>; theirs: Set<number> } | null = null;

  constructor(readonly step: number, private readonly reduced: Float32Array, private readonly ctx: InboxContext) {
    const { embDim, vocabSize } = ctx.model;
    this.rowFrames = new RowsAssembler(embDim, vocabSize, Math.ceil(vocabSize / rowsPerFrame(ctx.pieceFloats, embDim)));
  }

  /** A train task of the step: only the first can make this node the owner of half the tree. */
  task(slots: number[], slotCount: number): void {
    if (this.tasks++ > 0) return;
    const own = maximalSubtrees(slots, slotCount);
    const other = own.length === 1 ? rootComplement(own[0]!, slotCount) : null;
    this.half = other ? { own: own[0]!, other, ours: new Map(), theirs: new Set() } : null;
  }

  /** Our partial sum of `node` for a piece; kept (not copied) until the step's commit. */
  ours(node: TreeNode, piece: number, data: Float32Array): void {
    const half = this.half;
    if (!half || node[0] !== half.own[0] || node[1] !== half.own[1]) return;
    half.ours.set(piece, data);
    this.addHalves(piece);
  }

  /** A piece of the sum. It may follow a peer frame, once: that partial's sender failed, and the coordinator summed a recomputed one. */
  sum(h: TensorHeader, payload: Buffer): void {
    const piece = this.ctx.pieces[h.d];
    if (!piece || h.a !== this.step || (this.done.has(h.d) && !this.half?.theirs.has(h.d))) throw new ProtocolError(`unexpected reduced piece ${h.d} of step ${h.a}`);
    this.reduced.set(denseValues(h, payload, piece.end - piece.start, this.ctx.wire), piece.start);
    this.half?.theirs.delete(h.d);
    this.done.add(h.d);
  }

  /** A piece of the other half's partial sum. */
  peer(h: TensorHeader, payload: Buffer): void {
    const piece = this.ctx.pieces[h.d];
    const half = this.half;
    if (!piece || !half || h.a !== this.step || h.b !== half.other[0] || h.c !== half.other[1] || half.theirs.has(h.d) || this.done.has(h.d)) {
      throw new ProtocolError(`unexpected peer piece ${h.d} of step ${h.a} for slots [${h.b}, ${h.c})`);
    }
    half.theirs.add(h.d);
    this.addHalves(h.d, denseValues(h, payload, piece.end - piece.start, this.ctx.wire));
  }

  /** A frame of the summed token-embedding rows. */
  rows(h: TensorHeader, payload: Buffer): void {
    if (h.a !== this.step) throw new ProtocolError(`reduced rows of step ${h.a} while the weights are of step ${this.step}`);
    this.rowSum = this.rowFrames.add(h, payload) ?? this.rowSum;
  }

  /** The summed rows once every piece and row is here (the commit's precondition). */
  complete(): SparseRows {
    if (this.done.size !== this.ctx.pieces.length || !this.rowSum) {
      throw new ProtocolError(`commit of step ${this.step} before its reduced gradient (${this.done.size} of ${this.ctx.pieces.length} pieces)`);
    }
    return this.rowSum;
  }

  /**
   * A piece's sum from our half's partial and the other half's (`theirs` as it arrives, or already
   * in place), once both are here: what the coordinator computes (in bf16, from the values as they
   * crossed the wire). The other half that comes first waits in place.
   */
  private addHalves(index: number, theirs?: Float32Array): void {
    const half = this.half;
    const ours = half?.ours.get(index);
    const piece = this.ctx.pieces[index]!;
    const sum = this.reduced.subarray(piece.start, piece.end);
    if (half && !ours && theirs) sum.set(theirs);
    if (!half || !ours || !half.theirs.has(index) || this.done.has(index)) return;
    if (this.ctx.wire === 'bf16') roundToBf16(ours);
    if (theirs) addTo(sum, theirs, ours);
    else addInto(sum, ours);
    if (this.ctx.wire === 'bf16') roundToBf16(sum);
    this.done.add(index);
  }
}
