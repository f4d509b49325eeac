import assert from 'node:assert/strict';
import { test } from 'node:test';
import { denseFrame, FRAME, NonFiniteError, rowsFrame } from '../src/comm/frames.js';
import { Liveness } from '../src/comm/node-link.js';
import { OwedSums } from '../src/comm/owed.js';
import type { SlotStats } from '../src/comm/protocol.js';
import type { TrainWork } from '../src/comm/threads.js';
import { gradientPieces } from '../src/math/pieces.js';
import { buildLayout, gradientRegions } from '../src/model/layout.js';
import { tensorFrame } from './frame-helpers.js';

test('owed sums: each piece of each subtree once, rows only of its slots\' tokens, "trained" only after all of them', () => {
  const layout = buildLayout({ vocabSize: 10, contextLength: 4, embDim: 2, nHeads: 1, nLayers: 1, dropRate: 0, qkvBias: false });
  const pieceFloats = 16;
  const pieces = gradientPieces(gradientRegions(layout), pieceFloats);
  const sample = (input: number[]) => ({ id: 0, input: Int32Array.from(input), target: Int32Array.from(input, (t) => t + 1) });
  const work: TrainWork = { step: 3, slotCount: 4, dropout: { rate: 0, seed: 1 }, slots: [{ slot: 1, samples: [sample([1, 2, 3, 4])] }, { slot: 2, samples: [sample([5, 5, 6, 6])] }] };
  const owed = new OwedSums(7, work, { layout, pieces, wire: 'fp32', pieceFloats });
  const size = (d: number) => (pieces[d] ? pieces[d].end - pieces[d].start : 1);
  const dense = (b: number, c: number, d: number, fill = 1) => tensorFrame(denseFrame({ type: FRAME.partial, wire: 'fp32', a: 7, b, c, d, e: 0 }, new Float32Array(size(d)).fill(fill)));
  const rows = (b: number, c: number, ids: number[]) => tensorFrame(rowsFrame({ type: FRAME.partialRows, a: 7, b, c, d: 0, e: 1 }, { rows: Int32Array.from(ids), values: new Float32Array(2 * ids.length) }));

  const first = owed.dense(...dense(1, 2, 0));
  assert.ok(first.kind === 'dense');
  assert.deepEqual([first.node, first.piece, first.data.length], [[1, 2], 0, size(0)]);
  assert.throws(() => owed.dense(...dense(1, 2, 0)), /piece 0 of slots \[1, 2\) sent twice/);
  assert.throws(() => owed.dense(...dense(0, 2, 0)), /slots \[0, 2\), which are not this node's to sum in task 7/, '[1, 3) is two subtrees of 4 slots');
  assert.throws(() => owed.dense(...dense(1, 2, pieces.length)), new RegExp(`piece ${pieces.length} does not exist`));
  assert.throws(() => owed.dense(...dense(2, 3, 0, NaN)), NonFiniteError);
  assert.throws(() => owed.checkResults([]), /task 7 reported done before all its partial sums arrived/);

  for (const [b, c] of [[1, 2], [2, 3]] as const) for (const p of pieces) if (b === 2 || p.index > 0) owed.dense(...dense(b, c, p.index));
  assert.throws(() => owed.rows(...rows(2, 3, [1])), /row 1 is not a token of these slots/);
  const got = owed.rows(...rows(2, 3, [5, 6]));
  assert.ok(got?.kind === 'rows');
  assert.deepEqual([got.node, [...got.rows.rows]], [[2, 3], [5, 6]]);
  assert.throws(() => owed.checkResults([]), /reported done before/, 'the rows of [1, 2) are missing');
  assert.ok(owed.rows(...rows(1, 2, [1, 2, 3, 4])));

  const result = (slot: number, tokens = 4): SlotStats => ({ slot, sampleLoss: [1], tokens, computeMs: 0, heapBytes: 0, numTensors: 0 });
  assert.throws(() => owed.checkResults([result(1, 3), result(2)]), /task 7: wrong result for slot 1/);
  assert.throws(() => owed.checkResults([result(1)]), /wrong result for slot 2/);
  assert.throws(() => owed.checkResults([result(1), result(2), result(3)]), /results for slots it was not given/);
  owed.checkResults([result(1), result(2)]);
});

test('liveness: silence grows between answers; draining what was sent, or a late tick of ours, counts as heard', () => {
  const live = new Liveness(100, 0);
  assert.equal(live.tick(100, 1000), 100);
  assert.equal(live.tick(200, 1000), 200, 'bytes queued but not drained');
  assert.equal(live.tick(300, 400), 0, 'it drained some');
  assert.equal(live.tick(400, 400), 100);
  live.heard(450);
  assert.equal(live.tick(500, 400), 50, 'a pong');
  assert.equal(live.tick(900, 400), 0, 'our tick came 400 ms late: this process stalled, not the node');
  assert.equal(live.silentMs(950), 50);
});
