import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measureFloor, patternBytes } from '../bench/lan-floor.js';

test('transport floor patterns: the star relays 4B, the ring moves the least (3B), and every process receives what it must', () => {
  const b = 1000;
  const received = (m: number[][], to: number) => m.reduce((n, row) => n + row[to]!, 0);
  const total = (m: number[][]) => m.flat().reduce((x, y) => x + y, 0);
  const star = patternBytes('star', b);
  const ring = patternBytes('ring', b);
  assert.equal(total(star), 4 * b);
  assert.equal(total(ring), 3 * b);
  // The star's coordinator gets both partial sums, the ring's the sum once (half from each node);
  // every node gets a gradient's worth back either way.
  assert.equal(received(star, 0), 2 * b);
  assert.equal(received(ring, 0), b);
  for (const m of [star, ring]) for (const node of [1, 2]) assert.equal(received(m, node), b);
});

test('measureFloor moves a pattern between three processes and reports its CPU and time per step', async () => {
  const floor = await measureFloor('ring', 8e6, 2);
  assert.equal(floor.pattern, 'ring');
  assert.ok(floor.stepSec > 0 && floor.stepSec < 30, `step ${floor.stepSec} s`);
  assert.ok(floor.cpuSec > 0 && floor.cpuSec < 30, `cpu ${floor.cpuSec} s`);
});
