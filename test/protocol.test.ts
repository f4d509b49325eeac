import assert from 'node:assert/strict';
import { test } from 'node:test';
import { controlFrame, decodeFrame, denseFrame, denseValues, FRAME, framePool, HEADER_BYTES, ProtocolError, rowsFrame, rowValues } from '../src/comm/frames.js';
import { parseCoordinatorMessage, parseNodeMessage } from '../src/comm/messages.js';
import { fromBf16, roundToBf16, toBf16 } from '../src/math/bf16.js';
import { Rng } from '../src/util/rng.js';

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
