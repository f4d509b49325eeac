import assert from 'node:assert/strict';
import { test } from 'node:test';
import { denseFrame, FRAME } from '../src/comm/frames.js';
import { StateLoad } from '../src/worker/state-load.js';
import { tensorFrame } from './frame-helpers.js';

test('state load: each frame of each tensor once, where it belongs; the state-end only after all of them', () => {
  const tensors = [new Float32Array(10), new Float32Array(10), new Float32Array(10)];
  const load = new StateLoad(4, tensors, 4);
  const frame = (b: number, d: number, values: number[], a = 4) => tensorFrame(denseFrame({ type: FRAME.state, wire: 'fp32', a, b, c: 0, d, e: 0 }, Float32Array.from(values)));
  load.frame(...frame(1, 2, [7, 8]));
  assert.deepEqual([...tensors[1]!], [0, 0, 0, 0, 0, 0, 0, 0, 7, 8], 'the last piece of a tensor is short');
  assert.throws(() => load.frame(...frame(1, 2, [7, 8])), /unexpected state frame/, 'twice');
  assert.throws(() => load.frame(...frame(3, 0, [1, 2, 3, 4])), /unexpected state frame/, 'no fourth tensor');
  assert.throws(() => load.frame(...frame(0, 3, [1])), /unexpected state frame/, 'past the end');
  assert.throws(() => load.frame(...frame(0, 0, [1, 2, 3, 4], 5)), /unexpected state frame/, 'another version');
  assert.throws(() => load.frame(...frame(0, 0, [1, 2, 3])), /expected 4 values/);
  assert.throws(() => load.end(), /state-end after 1 of 9 state frames/);
  for (let b = 0; b < 3; b++) for (let d = 0; d < 3; d++) if (b !== 1 || d !== 2) load.frame(...frame(b, d, d === 2 ? [b, b] : [b, b, b, b]));
  load.end();
  assert.deepEqual([...tensors[2]!], Array(10).fill(2));
});
