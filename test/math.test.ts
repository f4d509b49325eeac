import assert from 'node:assert/strict';
import { test } from 'node:test';
import { adamwUpdate, newMoments } from '../src/math/adamw.js';
import { addInto, addRows, addTo, firstNonFinite, putRows, takeRows } from '../src/math/reduce.js';
import { kernelStatus, native } from '../src/native/kernels.js';
import { fromBf16, roundToBf16, toBf16 } from '../src/math/bf16.js';
import { shardBatch, shardRange } from '../src/math/shard.js';
import { batchMask, fillMask } from '../src/model/dropout.js';
import { hashKey, permutation, Rng } from '../src/util/rng.js';

test('AdamW matches hand-computed PyTorch values over three steps', () => {
  const lr = 0.1, wd = 0.5, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const opts = { lr, weightDecay: wd, beta1: b1, beta2: b2, eps };
  const p = Float32Array.from([1, -2]);
  const state = newMoments(2);
  const grads = [[0.5, -1], [0.25, 2], [-1, 0]];
  // Reference, by hand in float64: p <- p(1 - lr wd); m, v EMAs; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
  const ref = [1, -2], m = [0, 0], v = [0, 0];
  grads.forEach((g, k) => {
    const t = k + 1;
    for (let i = 0; i < 2; i++) {
      ref[i] = ref[i]! * (1 - lr * wd);
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
      ref[i] = ref[i]! - (lr / (1 - b1 ** t)) * m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** t) + eps);
    }
    // The gradient is passed as a sum over 4 tokens with scale 1/4.
    adamwUpdate(p, Float32Array.from(g.map((x) => 4 * x)), state, opts, t, 1 / 4);
  });
  // First step by hand: p0 = 1*(0.95) - 0.1 * 0.05/0.1 / (sqrt(0.00025)/sqrt(0.001)) = 0.95 - 0.1 = 0.85
  const first = Float32Array.from([1]);
  adamwUpdate(first, Float32Array.from([0.5]), newMoments(1), opts, 1);
  assert.ok(Math.abs(first[0]! - 0.85) < 1e-6, `first step ${first[0]}`);
  for (let i = 0; i < 2; i++) assert.ok(Math.abs(p[i]! - ref[i]!) < 1e-6, `param ${i}: ${p[i]} vs ${ref[i]}`);
});

test('shardBatch splits evenly, earlier workers take the remainder', () => {
  assert.deepEqual(shardBatch([1, 2, 3], 2), [[1, 2], [3]]);
  assert.deepEqual(shardBatch([1, 2], 3), [[1], [2], []]);
  assert.deepEqual(shardBatch([1, 2, 3, 4, 5, 6, 7], 3).map((s) => s.length), [3, 2, 2]);
  assert.throws(() => shardBatch([1], 0));
  assert.deepEqual(shardRange(10, 17, 3), [[10, 13], [13, 15], [15, 17]]);
});

test('AdamW over shards equals AdamW over the whole range', () => {
  const r = new Rng(3);
  const n = 1001;
  const p = Float32Array.from({ length: n }, () => r.normal());
  const g = Float32Array.from({ length: n }, () => r.normal());
  const opts = { lr: 1e-3, weightDecay: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
  const whole = p.slice(); const mw = newMoments(n);
  const parts = p.slice(); const mp = newMoments(n);
  for (let t = 1; t <= 3; t++) {
    adamwUpdate(whole, g, mw, opts, t, 0.5);
    for (const [s, e] of shardRange(0, n, 4)) adamwUpdate(parts, g, mp, opts, t, 0.5, s, e);
  }
  assert.deepEqual(parts, whole);
  assert.deepEqual(mp.v, mw.v);
});

test('sparse rows: taken out of a matrix (and zeroed there), added by row id, put back', () => {
  const width = 2;
  const a = new Float32Array(10).fill(0);
  a.set([1, 2], 2 * width);
  a.set([3, 4], 4 * width);
  const b = new Float32Array(10);
  b.set([10, 20], 0);
  b.set([30, 40], 4 * width);
  const ra = takeRows(a, [4, 2, 4], width);
  assert.deepEqual([...ra.rows], [2, 4]);
  assert.deepEqual([...ra.values], [1, 2, 3, 4]);
  assert.ok(a.every((v) => v === 0), 'taken rows are zeroed');
  const sum = addRows(ra, takeRows(b, [0, 4], width), width);
  assert.deepEqual([...sum.rows], [0, 2, 4]);
  assert.deepEqual([...sum.values], [10, 20, 1, 2, 33, 44]);
  const out = new Float32Array(10);
  putRows(out, sum, width);
  assert.deepEqual([...out], [10, 20, 0, 0, 1, 2, 0, 0, 33, 44]);
});

test('random streams are seeded and dropout masks are per sample, not per position', () => {
  assert.deepEqual(permutation(10, 1, 2), permutation(10, 1, 2));
  assert.notDeepEqual(permutation(10, 1, 2), permutation(10, 1, 3));
  const r = new Rng(5);
  let s = 0;
  for (let i = 0; i < 10000; i++) s += r.uniform();
  assert.ok(Math.abs(s / 10000 - 0.5) < 0.02);

  const out = new Float32Array(100000);
  fillMask(out, 0, out.length, hashKey(1, 2, 3, 4), 0.1);
  const dropped = out.filter((v) => v === 0).length / out.length;
  assert.ok(Math.abs(dropped - 0.1) < 0.005, `drop rate ${dropped}`);
  assert.ok(out.every((v) => v === 0 || Math.abs(v - 1 / 0.9) < 1e-6));

  const plan = { rate: 0.5, seed: 9, step: 4, sampleIds: [11, 12] };
  const both = batchMask(plan, 3, 64);
  const alone = batchMask({ ...plan, sampleIds: [12] }, 3, 64);
  assert.deepEqual(both.subarray(64), alone, 'sample 12 gets the same mask in any batch position');
  assert.notDeepEqual(both.subarray(0, 64), alone);
  assert.notDeepEqual(batchMask({ ...plan, step: 5 }, 3, 64), both);
});

test('the native kernels give the same bits as the JavaScript ones', (t) => {
  const kernels = native;
  if (!kernels) {
    assert.notEqual(process.env.CI, 'true', `CI builds the native addon: ${kernelStatus}`);
    t.skip(kernelStatus);
    return;
  }
  const rng = new Rng(17);
  const n = 100_003;
  const wide = () => Float32Array.from({ length: n }, () => rng.normal() * 10 ** (Math.floor(rng.uniform() * 12) - 8));
  const p = wide(), g = wide();
  g[5] = 0;
  g[6] = 1e-42; // subnormal
  const js = { p: p.slice(), m: newMoments(n) };
  const nat = { p: p.slice(), m: newMoments(n) };
  const opts = { lr: 4e-4, weightDecay: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
  const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  for (let step = 1; step <= 3; step++) {
    adamwUpdate(js.p, g, js.m, opts, step, 1 / 512, 7, n - 3, null);
    adamwUpdate(nat.p, g, nat.m, opts, step, 1 / 512, 7, n - 3, kernels);
    assert.ok(bits(js.p).equals(bits(nat.p)) && bits(js.m.m).equals(bits(nat.m.m)) && bits(js.m.v).equals(bits(nat.m.v)), `AdamW step ${step}`);
  }
  assert.ok(!bits(js.p).equals(bits(p)), 'the step changed the weights');
  const a = wide();
  assert.ok(bits(addInto(a.slice(), g, null)).equals(bits(addInto(a.slice(), g, kernels))), 'addInto');
  for (const k of [null, kernels]) assert.ok(bits(addTo(new Float32Array(n), a, g, k)).equals(bits(addInto(a.slice(), g, k))), `addTo (${k ? 'native' : 'JavaScript'})`);
  for (const bad of [NaN, Infinity, -Infinity]) {
    const x = wide();
    x[70_001] = bad;
    assert.equal(firstNonFinite(x, kernels), 70_001);
    assert.equal(firstNonFinite(x, null), 70_001);
  }
  assert.equal(firstNonFinite(wide(), kernels), -1);
  assert.throws(() => kernels.addInto(new Float32Array(3), new Float32Array(4)), /lengths differ/);
  assert.throws(() => kernels.addTo(new Float32Array(3), new Float32Array(3), new Float32Array(4)), /lengths differ/);
  const shared = new Float32Array(8);
  assert.throws(() => kernels.addTo(shared.subarray(0, 4), shared.subarray(2, 6), new Float32Array(4)), /overlaps/);
});

test('native bf16 conversions give the same bits as the JavaScript ones', (t) => {
  const kernels = native;
  if (!kernels) {
    t.skip(kernelStatus);
    return;
  }
  const rng = new Rng(23);
  const x = Float32Array.from({ length: 50_001 }, () => rng.normal() * 10 ** (Math.floor(rng.uniform() * 60) - 30));
  x.set([NaN, Infinity, -Infinity, 0, -0, 3.4e38, 1e-42], 0);
  const bits16 = (a: Uint16Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const bits32 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const h = toBf16(x, undefined, null);
  assert.ok(bits16(h).equals(bits16(toBf16(x, undefined, kernels))), 'toBf16');
  assert.ok(bits32(fromBf16(h, undefined, null)).equals(bits32(fromBf16(h, undefined, kernels))), 'fromBf16');
  const [a, b] = [x.slice(), x.slice()];
  roundToBf16(a, null);
  roundToBf16(b, kernels);
  assert.ok(bits32(a).equals(bits32(b)), 'roundToBf16');
});
