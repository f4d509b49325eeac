import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StepReducer } from '../src/comm/reducer.js';
import { assignSlots, reassignSlots } from '../src/math/assign.js';
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
  const run = (owners: number[][], order: 'forward' | 'reverse', failFirst: boolean, transient: boolean) => {
    const out = new Float32Array(80);
    let rowSum: SparseRows | null = null;
    const kept = new Set<Float32Array>();
    const store = { keep: (v: Float32Array) => { const c = v.slice(); kept.add(c); return c; }, release: (v: Float32Array) => assert.ok(kept.delete(v), 'released once, and only what was kept') };
    const summed: number[] = [];
    const reducer = new StepReducer(W, pieces, 2, (piece) => out.subarray(piece.start, piece.end), (piece) => summed.push(piece.index), (r) => (rowSum = r), store);
    const feed = (task: number, slots: number[], stop = Infinity) => {
      const items = maximalSubtrees(slots, W).flatMap((node) => [
        ...pieces.map((p) => ({ node, piece: p.index, data: treeSum(node, ([lo, hi]) => (hi - lo === 1 ? grads[lo]!.slice(p.start, p.end) : undefined), addInto) })),
      ]);
      const ordered = order === 'reverse' ? items.reverse() : items;
      ordered.slice(0, stop).forEach((it) => {
        reducer.add(task, { kind: 'dense', ...it }, transient);
        // Transient memory is reused once the call returns: the reducer must not have kept it.
        if (transient) it.data.fill(NaN);
      });
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
    assert.deepEqual(summed.sort(), pieces.map((p) => p.index), 'each piece summed once');
    assert.equal(kept.size, 0, 'every kept partial given back');
    return { out, rowSum: rowSum! as SparseRows };
  };
  const expectedRows = treeSum<SparseRows>([0, W], ([lo, hi]) => (hi - lo === 1 ? rows(lo) : undefined), (a, b) => addRows(a, b, 2));
  for (const owners of [[[0, 1, 2, 3, 4, 5]], [[0], [1], [2], [3], [4], [5]], [[0, 1, 2], [3, 4, 5]], [[1, 2], [0, 3], [4, 5]]]) {
    for (const order of ['forward', 'reverse'] as const) {
      for (const transient of [false, true]) {
        const { out, rowSum } = run(owners, order, true, transient);
        assert.ok(Buffer.from(out.buffer).equals(Buffer.from(reference.buffer)), `${JSON.stringify(owners)} ${order}${transient ? ' transient' : ''}`);
        assert.deepEqual(rowSum, expectedRows);
      }
    }
  }
  const sequential = grads.reduce((acc, g) => addInto(acc, g), new Float32Array(80));
  assert.ok(!Buffer.from(sequential.buffer).equals(Buffer.from(reference.buffer)), 'summation order matters: the test can tell');
  const reducer = new StepReducer(4, pieces, 2, (piece) => new Float32Array(piece.end - piece.start), () => {}, () => {}, { keep: (v) => v.slice(), release: () => {} });
  reducer.add(1, { kind: 'dense', node: [0, 2], piece: 0, data: new Float32Array(20) });
  assert.throws(() => reducer.add(2, { kind: 'dense', node: [1, 2], piece: 0, data: new Float32Array(20) }), /overlaps/);
});
