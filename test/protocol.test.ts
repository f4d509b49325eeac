import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Downstream } from '../src/comm/downstream.js';
import { StepInbox } from '../src/worker/step-inbox.js';
import { controlFrame, decodeFrame, denseFrame, denseValues, FRAME, framePool, HEADER_BYTES, peerFrame, ProtocolError, reducedFrame, reducedRowsFrames, rowsFrame, rowValues } from '../src/comm/frames.js';
import { parseCoordinatorMessage, parseNodeMessage } from '../src/comm/messages.js';
import { StepReducer } from '../src/comm/reducer.js';
import { assignSlots, reassignSlots } from '../src/math/assign.js';
import { fromBf16, roundToBf16, toBf16 } from '../src/math/bf16.js';
import { gradientPieces } from '../src/math/pieces.js';
import { addInto, addRows, type SparseRows } from '../src/math/reduce.js';
import { maximalSubtrees, rootComplement, treeSum } from '../src/math/tree.js';
import { buildLayout, convertHead, gradientRegions, HEAD_BLOCK, headBlocks } from '../src/model/layout.js';
import { Rng } from '../src/util/rng.js';

test('reduction tree: maximal subtrees of a slot set, and the order of the sum', () => {
  assert.deepEqual(maximalSubtrees([0, 1, 2, 3], 4), [[0, 4]]);
  assert.deepEqual(maximalSubtrees([2, 3], 4), [[2, 4]]);
  assert.deepEqual(maximalSubtrees([1, 2], 4), [[1, 2], [2, 3]]);
  assert.deepEqual(maximalSubtrees([0, 1, 2], 6), [[0, 3]], 'ceil halves: [0, 3) is a subtree of 6');
  assert.deepEqual(maximalSubtrees([2], 3), [[2, 3]]);
  assert.deepEqual(maximalSubtrees([], 3), []);
  const order: string[] = [];
  const sum = treeSum<string>([0, 5], ([lo, hi]) => (hi - lo === 1 ? `g${lo}` : undefined), (a, b) => {
    order.push(`${a}+${b}`);
    return `(${a}+${b})`;
  });
  assert.equal(sum, '(((g0+g1)+g2)+(g3+g4))');
  const withPartial = treeSum<string>([0, 5], ([lo, hi]) => (lo === 0 && hi === 3 ? 'P' : hi - lo === 1 ? `g${lo}` : undefined), (a, b) => `(${a}+${b})`);
  assert.equal(withPartial, '(P+(g3+g4))', 'a stored partial stands for its whole subtree');
});

test('root complement: the other half of the tree, only for a child of the root', () => {
  assert.deepEqual(rootComplement([0, 2], 4), [2, 4]);
  assert.deepEqual(rootComplement([2, 4], 4), [0, 2]);
  assert.deepEqual(rootComplement([0, 3], 5), [3, 5], 'the left child takes the larger half');
  assert.deepEqual(rootComplement([1, 2], 2), [0, 1]);
  assert.equal(rootComplement([0, 1], 4), null, 'a grandchild of the root needs more than one other sum');
  assert.equal(rootComplement([0, 4], 4), null, 'the root itself');
  assert.equal(rootComplement([0, 1], 1), null, 'a single slot');
  assert.equal(rootComplement([0, 2], 5), null, '[0, 2) is no subtree of 5 slots');
});

test('slot assignment: contiguous, proportional to threads; orphans go to the least loaded', () => {
  assert.deepEqual([...assignSlots(4, [{ id: 0, threads: 2 }, { id: 1, threads: 2 }])], [[0, [0, 1]], [1, [2, 3]]]);
  assert.deepEqual([...assignSlots(2, [{ id: 1, threads: 2 }, { id: 2, threads: 1 }])], [[1, [0]], [2, [1]]]);
  assert.deepEqual([...assignSlots(3, [{ id: 1, threads: 1 }, { id: 2, threads: 1 }])], [[1, [0, 1]], [2, [2]]]);
  assert.deepEqual([...assignSlots(2, [{ id: 0, threads: 1 }, { id: 1, threads: 1 }, { id: 2, threads: 1 }])].map(([, s]) => s.length), [1, 1, 0]);
  const moved = reassignSlots([2, 3], [{ id: 0, threads: 1 }, { id: 4, threads: 2 }], new Map([[0, 1], [4, 1]]));
  assert.deepEqual([...moved], [[4, [2, 3]]], 'the two-thread member takes both');
});

test('gradient pieces: production order, bounded size, covering the dense gradient once', () => {
  const layout = buildLayout({ vocabSize: 100, contextLength: 4, embDim: 8, nHeads: 2, nLayers: 2, dropRate: 0, qkvBias: false });
  const regions = gradientRegions(layout);
  const D = layout.config.embDim;
  const head = headBlocks(layout);
  assert.equal(head.length, Math.ceil(100 / HEAD_BLOCK));
  assert.equal(regions.length, head.length + layout.config.nLayers + 2);
  head.forEach((b, i) => assert.deepEqual(regions[i], [b.offset, b.offset + D * (b.end - b.start)], 'out_head, block by block, comes first'));
  assert.deepEqual(regions[head.length], [layout.finalNormScale.offset, layout.outHead.offset], 'then the final norm');
  assert.deepEqual(regions.at(-1), [layout.posEmb.offset, layout.posEmb.offset + layout.posEmb.size]);
  const pieces = gradientPieces(regions, 100);
  const covered = new Uint8Array(layout.totalSize);
  for (const p of pieces) {
    assert.ok(p.end - p.start <= 100 && p.end > p.start);
    for (let i = p.start; i < p.end; i++) covered[i]! += 1;
  }
  assert.ok(covered.subarray(layout.posEmb.offset).every((c) => c === 1), 'every dense value in exactly one piece');
  assert.ok(covered.subarray(0, layout.tokEmb.size).every((c) => c === 0), 'the token embedding is sparse, not in pieces');
  assert.deepEqual(pieces.map((p) => p.index), pieces.map((_, i) => i));
});

test('out_head is stored as its column blocks: each one contiguous, [D, width] row-major, convertible both ways', () => {
  const D = 3;
  const V = 2 * HEAD_BLOCK + 5;
  const layout = buildLayout({ vocabSize: V, contextLength: 4, embDim: D, nHeads: 1, nLayers: 1, dropRate: 0, qkvBias: false });
  const blocks = headBlocks(layout);
  assert.deepEqual(blocks.map((b) => [b.start, b.end]), [[0, HEAD_BLOCK], [HEAD_BLOCK, 2 * HEAD_BLOCK], [2 * HEAD_BLOCK, V]]);
  blocks.forEach((b, i) => assert.equal(b.offset, i === 0 ? layout.outHead.offset : blocks[i - 1]!.offset + D * (blocks[i - 1]!.end - blocks[i - 1]!.start)));
  const matrix = Float32Array.from({ length: D * V }, (_, i) => i);
  const blocked = convertHead(matrix, D, V, true);
  for (const [r, c] of [[0, 0], [1, 7], [2, HEAD_BLOCK], [1, V - 1], [2, 2 * HEAD_BLOCK + 3]] as const) {
    const b = blocks.find((x) => c >= x.start && c < x.end)!;
    assert.equal(blocked[b.offset - layout.outHead.offset + r * (b.end - b.start) + c - b.start], matrix[r * V + c], `element (${r}, ${c})`);
  }
  assert.deepEqual(convertHead(blocked, D, V, false), matrix);
});

test('bf16: round to nearest even, NaN stays NaN, halves the bytes', () => {
  const x = Float32Array.from([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 3.4e38, 0]);
  const back = fromBf16(toBf16(x));
  assert.deepEqual([...back], [1, 1, 1 + 2 ** -6, -2.5, Infinity, 0]);
  assert.equal(back[1], 1, 'a tie rounds down to the even mantissa');
  assert.equal(back[2], 1 + 2 ** -6, 'a tie rounds up to the even mantissa');
  assert.equal(back[4], Infinity, 'past the largest bf16, rounding overflows');
  assert.ok(Number.isNaN(fromBf16(toBf16(Float32Array.from([NaN])))[0]));
  const r = x.slice();
  roundToBf16(r);
  assert.deepEqual(r, back, 'rounding in place equals a round trip');
  const rng = new Rng(1);
  const big = Float32Array.from({ length: 1000 }, () => rng.normal());
  const rt = fromBf16(toBf16(big));
  big.forEach((v, i) => assert.ok(Math.abs(rt[i]! - v) <= Math.abs(v) * 2 ** -8, `${v} -> ${rt[i]}`));
});

/** Random slot gradients and the sum the canonical tree gives over them. */
function slotGradients(slots: number, length: number, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: slots }, () => Float32Array.from({ length }, () => rng.normal() * 10 ** Math.floor(rng.uniform() * 6)));
}

test('the reducer gives the same bits for any decomposition and arrival order; a failed task is dropped', () => {
  const W = 6;
  const pieces = gradientPieces([[0, 50], [50, 80]], 20);
  const grads = slotGradients(W, 80, 7);
  const reference = treeSum([0, W], ([lo, hi]) => (hi - lo === 1 ? grads[lo]!.slice() : undefined), addInto);
  const rows = (slot: number): SparseRows => ({ rows: Int32Array.from([slot, 10]), values: Float32Array.from([slot, slot, 1, 1]) });
  const run = (owners: number[][], order: 'forward' | 'reverse', failFirst: boolean) => {
    const out = new Float32Array(80);
    let rowSum: SparseRows | null = null;
    const reducer = new StepReducer(W, pieces, 2, (piece, sum) => out.set(sum, piece.start), (r) => (rowSum = r));
    const feed = (task: number, slots: number[], stop = Infinity) => {
      const items = maximalSubtrees(slots, W).flatMap((node) => [
        ...pieces.map((p) => ({ node, piece: p.index, data: treeSum(node, ([lo, hi]) => (hi - lo === 1 ? grads[lo]!.slice(p.start, p.end) : undefined), addInto) })),
      ]);
      const ordered = order === 'reverse' ? items.reverse() : items;
      ordered.slice(0, stop).forEach((it) => reducer.add(task, { kind: 'dense', ...it }));
      if (stop === Infinity) {
        for (const node of maximalSubtrees(slots, W)) {
          reducer.add(task, { kind: 'rows', node, rows: treeSum(node, ([lo, hi]) => (hi - lo === 1 ? rows(lo) : undefined), (a, b) => addRows(a, b, 2)) });
        }
      }
    };
    owners.forEach((slots, task) => {
      if (failFirst && task === 0) {
        feed(100, slots, 2);
        reducer.drop(100);
      }
      feed(task, slots);
    });
    assert.ok(reducer.complete);
    return { out, rowSum: rowSum! as SparseRows };
  };
  const expectedRows = treeSum<SparseRows>([0, W], ([lo, hi]) => (hi - lo === 1 ? rows(lo) : undefined), (a, b) => addRows(a, b, 2));
  for (const owners of [[[0, 1, 2, 3, 4, 5]], [[0], [1], [2], [3], [4], [5]], [[0, 1, 2], [3, 4, 5]], [[1, 2], [0, 3], [4, 5]]]) {
    for (const order of ['forward', 'reverse'] as const) {
      const { out, rowSum } = run(owners, order, true);
      assert.ok(Buffer.from(out.buffer).equals(Buffer.from(reference.buffer)), `${JSON.stringify(owners)} ${order}`);
      assert.deepEqual(rowSum, expectedRows);
    }
  }
  const sequential = grads.reduce((acc, g) => addInto(acc, g), new Float32Array(80));
  assert.ok(!Buffer.from(sequential.buffer).equals(Buffer.from(reference.buffer)), 'summation order matters: the test can tell');
  const reducer = new StepReducer(4, pieces, 2, () => {}, () => {});
  reducer.add(1, { kind: 'dense', node: [0, 2], piece: 0, data: new Float32Array(20) });
  assert.throws(() => reducer.add(2, { kind: 'dense', node: [1, 2], piece: 0, data: new Float32Array(20) }), /overlaps/);
});

/** A node as Downstream sees it: it keeps what it is sent (type, subtree, piece, values) and frees each frame. */
class RecordingNode {
  readonly got: string[] = [];
  readonly values = new Map<string, Float32Array>();

  send(frame: Buffer, done?: () => void): void {
    const f = decodeFrame(frame);
    if (f.type === FRAME.control) throw new Error('a control frame');
    const { type, a, b, c, d } = f.header;
    const key = type === FRAME.peer ? `peer ${d} [${b}, ${c}) step ${a}` : `sum ${d} step ${a}`;
    this.got.push(key);
    this.values.set(key, denseValues(f.header, f.payload, f.header.f, f.header.wire).slice());
    done?.();
  }
}

test('downstream: the owner of one half gets the other half\'s partial as it arrives; everyone else the sum', () => {
  const pieces = gradientPieces([[0, 12]], 4);
  const values = (x: number) => new Float32Array(4).fill(x);
  // 2 nodes x 2 threads: each node owns a half of slots [0, 4). Tasks 1 and 2.
  const [a, b] = [new RecordingNode(), new RecordingNode()];
  const live = [a, b];
  const halves = new Downstream<RecordingNode>(7, 4, 'fp32', pieces, framePool(4));
  halves.launch(a, [0, 1]);
  halves.launch(b, [2, 3]);
  halves.partial(2, b, live, [2, 4], 0, values(2), true);
  assert.deepEqual(a.got, ['peer 0 [2, 4) step 7'], 'a node gets the other half\'s partial at once');
  assert.deepEqual(a.values.get('peer 0 [2, 4) step 7'), values(2));
  assert.deepEqual(b.got, [], 'never its own');
  halves.partial(1, a, live, [0, 2], 0, values(1), true);
  halves.sum(live, pieces[0]!, values(3));
  assert.deepEqual(b.got, ['peer 0 [0, 2) step 7'], 'a piece sent as a peer frame is not sent again as the sum');
  // b fails (task 2) after its piece 1 went to a; our threads recompute its slots (task 3).
  halves.partial(2, b, live, [2, 4], 1, values(2), true);
  halves.drop(2);
  halves.partial(3, null, [a], [2, 4], 1, values(2.5), true);
  halves.partial(3, null, [a], [2, 4], 2, values(2.5), true);
  halves.sum([a], pieces[1]!, values(3.5));
  assert.deepEqual(a.got.slice(1), ['peer 1 [2, 4) step 7', 'peer 2 [2, 4) step 7', 'sum 1 step 7'],
    'a failed task\'s peer frame is followed by the sum; no second peer frame for a piece');
  halves.partial(4, b, [b], [0, 2], 2, values(1), true);
  assert.deepEqual(b.got.length, 1, 'a lost node gets nothing more');

  // Slots reassigned to a node mid-step (its second task): it gets sums, and a summed piece is never forwarded.
  const [c, d] = [new RecordingNode(), new RecordingNode()];
  const again = new Downstream<RecordingNode>(8, 2, 'fp32', pieces, framePool(4));
  again.launch(c, [0]);
  again.launch(d, [1]);
  again.sum([c, d], pieces[0]!, values(1));
  again.partial(1, c, [c, d], [0, 1], 0, values(1), true);
  again.launch(c, [1]);
  again.partial(1, c, [c, d], [0, 1], 1, values(1), true);
  again.partial(2, c, [c, d], [1, 2], 1, values(1), true);
  again.sum([c, d], pieces[1]!, values(2));
  assert.deepEqual(c.got, ['sum 0 step 8', 'sum 1 step 8']);
  assert.deepEqual(d.got, ['sum 0 step 8', 'peer 1 [0, 1) step 8']);

  // 4 nodes x 1 thread: no node owns a half, so all get sums; a bf16 run never forwards our threads' unrounded sums.
  const four = [0, 1, 2, 3].map(() => new RecordingNode());
  const quarters = new Downstream<RecordingNode>(1, 4, 'fp32', pieces, framePool(4));
  four.forEach((n, i) => quarters.launch(n, [i]));
  four.forEach((n, i) => quarters.partial(i + 1, n, four, [i, i + 1], 0, values(i), true));
  quarters.sum(four, pieces[0]!, values(6));
  four.forEach((n) => assert.deepEqual(n.got, ['sum 0 step 1']));
  const node = new RecordingNode();
  const local = new Downstream<RecordingNode>(2, 2, 'bf16', pieces, framePool(4));
  local.launch(node, [1]);
  local.partial(1, null, [node], [0, 1], 0, values(1), false);
  local.sum([node], pieces[0]!, values(2));
  assert.deepEqual(node.got, ['sum 0 step 2']);
});

test('step inbox: our half plus the peer\'s gives the coordinator\'s bits in either order; frames out of turn are refused', () => {
  const pieces = gradientPieces([[0, 8]], 4);
  const model = { vocabSize: 10, contextLength: 4, embDim: 2, nHeads: 1, nLayers: 1, dropRate: 0, qkvBias: false };
  const tensor = (f: Buffer) => {
    const d = decodeFrame(f);
    if (d.type === FRAME.control) throw new Error('a control frame');
    return [d.header, d.payload] as const;
  };
  const rng = new Rng(3);
  const random = () => Float32Array.from({ length: 4 }, () => rng.normal() * 1000);
  for (const wire of ['fp32', 'bf16'] as const) {
    const reduced = new Float32Array(8);
    const inbox = new StepInbox(5, reduced, { pieces, model, pieceFloats: 4, wire });
    inbox.task([1], 2);
    const [a0, b0, a1, b1] = [random(), random(), random(), random()];
    // What the coordinator computes: the two partials as they crossed the wire, added, rounded in bf16.
    const onWire = (x: Float32Array) => denseValues(...tensor(denseFrame({ type: FRAME.partial, wire, a: 0, b: 0, c: 1, d: 0, e: 0 }, x)), 4, wire).slice();
    const expected = (ours: Float32Array, theirs: Float32Array) => {
      const sum = addInto(onWire(theirs), onWire(ours));
      if (wire === 'bf16') roundToBf16(sum);
      return sum;
    };
    const want0 = expected(a0, b0);
    const want1 = expected(a1, b1);
    inbox.ours([1, 2], 0, a0.slice());
    inbox.peer(...tensor(peerFrame(5, [0, 1], 0, b0, wire)));
    inbox.peer(...tensor(peerFrame(5, [0, 1], 1, b1, wire)));
    inbox.ours([1, 2], 1, a1.slice());
    assert.deepEqual(reduced.subarray(0, 4), want0, `${wire}: ours first`);
    assert.deepEqual(reduced.subarray(4, 8), want1, `${wire}: the peer's first`);
    assert.throws(() => inbox.peer(...tensor(peerFrame(5, [0, 1], 0, b0, wire))), /unexpected peer piece 0 of step 5/);
    assert.throws(() => inbox.complete(), /commit of step 5 before its reduced gradient/, 'the rows are missing');
    for (const f of reducedRowsFrames(5, { rows: Int32Array.from([3]), values: Float32Array.from([1, 2]) }, 2, 4)) inbox.rows(...tensor(f));
    assert.deepEqual([...inbox.complete().rows], [3]);
    // The sum may replace a peer frame once (its sender failed); never twice.
    inbox.sum(...tensor(reducedFrame(5, 0, b0, wire)));
    assert.deepEqual(reduced.subarray(0, 4), onWire(b0));
    assert.throws(() => inbox.sum(...tensor(reducedFrame(5, 0, b0, wire))), /unexpected reduced piece 0 of step 5/);
  }
  const other = new StepInbox(5, new Float32Array(8), { pieces, model, pieceFloats: 4, wire: 'fp32' });
  other.task([0], 3);
  assert.throws(() => other.peer(...tensor(peerFrame(5, [1, 3], 0, new Float32Array(4), 'fp32'))), /unexpected peer piece/, '[0, 1) is no half of 3 slots');
  assert.throws(() => other.sum(...tensor(reducedFrame(4, 0, new Float32Array(4), 'fp32'))), /unexpected reduced piece 0 of step 4/);
  assert.throws(() => other.rows(...tensor(reducedRowsFrames(6, { rows: new Int32Array(0), values: new Float32Array(0) }, 2, 4)[0]!)), /rows of step 6/);
});

test('frames: dense (fp32, bf16) and rows round trip; malformed frames are refused', () => {
  const values = Float32Array.from([1.5, -2, 3e-3, 7]);
  const f = decodeFrame(denseFrame({ type: FRAME.partial, wire: 'fp32', a: 9, b: 1, c: 3, d: 4, e: 0 }, values));
  assert.ok(f.type === FRAME.partial);
  assert.deepEqual([f.header.a, f.header.b, f.header.c, f.header.d, f.header.f], [9, 1, 3, 4, 4]);
  assert.deepEqual(denseValues(f.header, f.payload, 4, 'fp32'), values);
  const h = decodeFrame(denseFrame({ type: FRAME.reduced, wire: 'bf16', a: 1, b: 0, c: 0, d: 0, e: 0 }, values));
  assert.ok(h.type === FRAME.reduced && h.payload.length === 8, 'bf16 halves the payload');
  assert.deepEqual(denseValues(h.header, h.payload, 4, 'bf16'), fromBf16(toBf16(values)));
  assert.throws(() => denseValues(h.header, h.payload, 4, 'fp32'), /the run uses fp32/);
  assert.throws(() => denseValues(f.header, f.payload, 5, 'fp32'), /expected 5 values/);
  const nan = decodeFrame(denseFrame({ type: FRAME.partial, wire: 'fp32', a: 0, b: 0, c: 1, d: 0, e: 0 }, Float32Array.from([1, NaN])));
  assert.ok(nan.type !== FRAME.control);
  assert.throws(() => denseValues(nan.header, nan.payload, 2, 'fp32'), /non-finite/);

  const rows = { rows: Int32Array.from([3, 8]), values: Float32Array.from([1, 2, 3, 4]) };
  const r = decodeFrame(rowsFrame({ type: FRAME.partialRows, a: 1, b: 0, c: 1, d: 0, e: 1 }, rows));
  assert.ok(r.type === FRAME.partialRows);
  assert.deepEqual(rowValues(r.header, r.payload, 2, 10), rows);
  assert.throws(() => rowValues(r.header, r.payload, 2, 5), /below 5/);
  const unsorted = decodeFrame(rowsFrame({ type: FRAME.partialRows, a: 1, b: 0, c: 1, d: 0, e: 1 }, { rows: Int32Array.from([8, 3]), values: rows.values }));
  assert.ok(unsorted.type === FRAME.partialRows);
  assert.throws(() => rowValues(unsorted.header, unsorted.payload, 2, 10), /increasing/);

  for (const bad of [Buffer.alloc(0), Buffer.from([9]), Buffer.from([FRAME.partial, 0, 0]), Buffer.concat([Buffer.from([FRAME.partial, 7]), Buffer.alloc(30)])]) {
    assert.throws(() => decodeFrame(bad), ProtocolError);
  }
  assert.throws(() => decodeFrame(Buffer.from([FRAME.control, 0x92, 0x01])), /undecodable/);
});

test('frame pool: frames built in reused memory decode like fresh ones; only its own buffers come back', () => {
  const pool = framePool(8);
  const first = pool.take();
  assert.equal(first.byteLength, HEADER_BYTES + 32);
  const a = Float32Array.from([1, 2, 3]);
  const frame = denseFrame({ type: FRAME.partial, wire: 'fp32', a: 5, b: 0, c: 1, d: 2, e: 0 }, a, first);
  assert.equal(frame.buffer, first, 'built in the pool memory');
  assert.equal(frame.length, HEADER_BYTES + 12);
  pool.give(first);
  assert.equal(pool.take(), first, 'given back, taken again');
  const b = Float32Array.from([-4, 5]);
  const again = decodeFrame(denseFrame({ type: FRAME.reduced, wire: 'bf16', a: 6, b: 0, c: 0, d: 1, e: 0 }, b, first));
  assert.ok(again.type === FRAME.reduced);
  assert.deepEqual([again.header.a, again.header.d, again.header.f], [6, 1, 2], 'no trace of the earlier frame in the header');
  assert.deepEqual(denseValues(again.header, again.payload, 2, 'bf16'), b);
  assert.throws(() => denseFrame({ type: FRAME.partial, wire: 'fp32', a: 0, b: 0, c: 1, d: 0, e: 0 }, new Float32Array(9), first), /do not fit/);
  const copy = pool.copy(a);
  assert.deepEqual(copy, a);
  assert.notEqual(copy.buffer, first, 'a second buffer while the first is out');
  pool.give(new ArrayBuffer(HEADER_BYTES + 33));
  pool.give(new SharedArrayBuffer(HEADER_BYTES + 32));
  pool.give(copy.buffer);
  assert.equal(pool.take(), copy.buffer);
  assert.equal(pool.take().byteLength, HEADER_BYTES + 32, 'buffers of another size or kind are not kept');
});

test('control messages are checked field by field', () => {
  const sample = { id: 3, input: Buffer.from(Int32Array.from([1, 2]).buffer), target: Buffer.from(Int32Array.from([2, 3]).buffer) };
  const train = parseCoordinatorMessage({ kind: 'train', task: 1, step: 2, slotCount: 2, slots: [{ slot: 1, samples: [sample] }], dropout: { rate: 0.1, seed: 5 } });
  assert.ok(train.kind === 'train');
  assert.deepEqual([...train.slots[0]!.samples[0]!.target], [2, 3]);
  for (const [raw, pattern] of [
    [{ kind: 'train', task: -1, step: 2, slotCount: 2, slots: [], dropout: { rate: 0, seed: 0 } }, /task must be an integer/],
    [{ kind: 'train', task: 1, step: 2, slotCount: 2, slots: [{ slot: 0, samples: [{ ...sample, input: [1, 2] }] }], dropout: { rate: 0, seed: 0 } }, /int32 token ids/],
    [{ kind: 'commit', step: 1, gradScale: NaN, adam: {} }, /gradScale must be a finite number/],
    [{ kind: 'welcome' }, /proof must be 32 bytes/],
    [{ kind: 'launch-missiles' }, /unknown message kind/],
    [[1, 2], /must be an object/],
    ['hello', /must be an object/],
  ] as const) {
    assert.throws(() => parseCoordinatorMessage(raw), pattern);
  }
  assert.throws(() => parseNodeMessage({ kind: 'trained', task: 1, results: [{ slot: 0, sampleLoss: [1], tokens: 1, computeMs: Infinity, heapBytes: 0, numTensors: 0 }] }), /computeMs must be a finite number/);
  assert.throws(() => parseNodeMessage({ kind: 'trained', task: 1, results: [{ slot: 0, sampleLoss: ['1'], tokens: 1, computeMs: 1, heapBytes: 0, numTensors: 0 }] }), /sampleLoss\[0\] must be a number/);
  assert.throws(() => parseNodeMessage({ kind: 'hello', protocol: 1, nonce: new Uint8Array(31), proof: new Uint8Array(32), host: 'h', threads: 1, backend: 'wasm' }), /nonce must be 32 bytes/);
  assert.equal(parseNodeMessage({ kind: 'leave', reason: 'bye' }).kind, 'leave');
});

test('10,000 fuzzed frames: only protocol errors, never a crash', () => {
  const rng = new Rng(42);
  const valid = [
    denseFrame({ type: FRAME.partial, wire: 'fp32', a: 1, b: 0, c: 2, d: 3, e: 0 }, Float32Array.from([1, 2, 3, 4])),
    rowsFrame({ type: FRAME.partialRows, a: 1, b: 0, c: 1, d: 0, e: 1 }, { rows: Int32Array.from([1, 5]), values: new Float32Array(4) }),
    controlFrame({ kind: 'trained', task: 1, results: [{ slot: 0, sampleLoss: [1], tokens: 4, computeMs: 1, heapBytes: 0, numTensors: 1 }] }),
    controlFrame({ kind: 'hello', protocol: 1, nonce: new Uint8Array(32), proof: new Uint8Array(32), host: 'x', threads: 2, backend: 'wasm' }),
  ];
  let accepted = 0;
  for (let i = 0; i < 10_000; i++) {
    const base = valid[rng.below(valid.length)]!;
    const buf = rng.uniform() < 0.2 ? Buffer.from(Array.from({ length: rng.below(80) }, () => rng.below(256))) : Buffer.from(base);
    for (let k = rng.below(4); k >= 0; k--) if (buf.length) buf[rng.below(buf.length)] = rng.below(256);
    const cut = rng.uniform() < 0.3 ? buf.subarray(0, rng.below(buf.length + 1)) : buf;
    try {
      const f = decodeFrame(cut);
      if (f.type === FRAME.control) parseNodeMessage(f.message);
      else if (f.type === FRAME.partialRows || f.type === FRAME.reducedRows) rowValues(f.header, f.payload, 2, 8);
      else denseValues(f.header, f.payload, 4, 'fp32');
      accepted += 1;
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `not a protocol error: ${(err as Error).stack}`);
    }
  }
  assert.ok(accepted < 10_000, 'mutations are caught');
});
