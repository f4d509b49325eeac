import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Downstream } from '../src/comm/downstream.js';
import { StepInbox } from '../src/worker/step-inbox.js';
import { denseFrame, denseValues, FRAME, framePool, peerFrame, reducedFrame, reducedRowsFrames } from '../src/comm/frames.js';
import { roundToBf16 } from '../src/math/bf16.js';
import { gradientPieces } from '../src/math/pieces.js';
import { addInto } from '../src/math/reduce.js';
import { Rng } from '../src/util/rng.js';
import { tensorFrame } from './frame-helpers.js';

/** A node as Downstream sees it: it keeps what it is sent (type, subtree, piece, values) and frees each frame. */
class RecordingNode {
  readonly got: string[] = [];
  readonly values = new Map<string, Float32Array>();

  send(frame: Buffer, done?: () => void): void {
    const [header, payload] = tensorFrame(frame);
    const { type, a, b, c, d } = header;
    const key = type === FRAME.peer ? `peer ${d} [${b}, ${c}) step ${a}` : `sum ${d} step ${a}`;
    this.got.push(key);
    this.values.set(key, denseValues(header, payload, header.f, header.wire).slice());
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
  const rng = new Rng(3);
  const random = () => Float32Array.from({ length: 4 }, () => rng.normal() * 1000);
  for (const wire of ['fp32', 'bf16'] as const) {
    const reduced = new Float32Array(8);
    const inbox = new StepInbox(5, reduced, { pieces, model, pieceFloats: 4, wire });
    inbox.task([1], 2);
    const [a0, b0, a1, b1] = [random(), random(), random(), random()];
    // What the coordinator computes: the two partials as they crossed the wire, added, rounded in bf16.
    const onWire = (x: Float32Array) => denseValues(...tensorFrame(denseFrame({ type: FRAME.partial, wire, a: 0, b: 0, c: 1, d: 0, e: 0 }, x)), 4, wire).slice();
    const expected = (ours: Float32Array, theirs: Float32Array) => {
      const sum = addInto(onWire(theirs), onWire(ours));
      if (wire === 'bf16') roundToBf16(sum);
      return sum;
    };
    const want0 = expected(a0, b0);
    const want1 = expected(a1, b1);
    inbox.ours([1, 2], 0, a0.slice());
    inbox.peer(...tensorFrame(peerFrame(5, [0, 1], 0, b0, wire)));
    inbox.peer(...tensorFrame(peerFrame(5, [0, 1], 1, b1, wire)));
    inbox.ours([1, 2], 1, a1.slice());
    assert.deepEqual(reduced.subarray(0, 4), want0, `${wire}: ours first`);
    assert.deepEqual(reduced.subarray(4, 8), want1, `${wire}: the peer's first`);
    assert.throws(() => inbox.peer(...tensorFrame(peerFrame(5, [0, 1], 0, b0, wire))), /unexpected peer piece 0 of step 5/);
    assert.throws(() => inbox.complete(), /commit of step 5 before its reduced gradient/, 'the rows are missing');
    for (const f of reducedRowsFrames(5, { rows: Int32Array.from([3]), values: Float32Array.from([1, 2]) }, 2, 4)) inbox.rows(...tensorFrame(f));
    assert.deepEqual([...inbox.complete().rows], [3]);
    // The sum may replace a peer frame once (its sender failed); never twice.
    inbox.sum(...tensorFrame(reducedFrame(5, 0, b0, wire)));
    assert.deepEqual(reduced.subarray(0, 4), onWire(b0));
    assert.throws(() => inbox.sum(...tensorFrame(reducedFrame(5, 0, b0, wire))), /unexpected reduced piece 0 of step 5/);
  }
  const other = new StepInbox(5, new Float32Array(8), { pieces, model, pieceFloats: 4, wire: 'fp32' });
  other.task([0], 3);
  assert.throws(() => other.peer(...tensorFrame(peerFrame(5, [1, 3], 0, new Float32Array(4), 'fp32'))), /unexpected peer piece/, '[0, 1) is no half of 3 slots');
  assert.throws(() => other.sum(...tensorFrame(reducedFrame(4, 0, new Float32Array(4), 'fp32'))), /unexpected reduced piece 0 of step 4/);
  assert.throws(() => other.rows(...tensorFrame(reducedRowsFrames(6, { rows: new Int32Array(0), values: new Float32Array(0) }, 2, 4)[0]!)), /rows of step 6/);
});
