import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { cpuSeconds, threadSplit } from '../bench/lan-procs.js';

const BUSY_MS = 300;
const busy = (ms: number) => {
  const end = performance.now() + ms;
  while (performance.now() < end);
};

test("threadSplit tells a process's main thread from its other threads", async () => {
  const pid = process.pid;
  const t0 = threadSplit([pid]);
  busy(BUSY_MS);
  const t1 = threadSplit([pid]);
  assert.ok(t1.main - t0.main >= 0.8 * BUSY_MS / 1000, `main thread: ${t1.main - t0.main} s for ${BUSY_MS} ms of work`);

  // A thread that spins while the main thread sleeps; it stays alive until it is measured.
  const worker = new Worker(`const { parentPort } = require('node:worker_threads');
    const end = performance.now() + ${BUSY_MS};
    while (performance.now() < end);
    parentPort.once('message', () => {});
    parentPort.postMessage('done');`, { eval: true });
  await new Promise((done) => worker.once('message', done));
  const t2 = threadSplit([pid]);
  try {
    assert.ok(t2.other - t1.other >= 0.8 * BUSY_MS / 1000, `other threads: ${t2.other - t1.other} s for ${BUSY_MS} ms of work`);
    assert.ok(t2.main - t1.main < 0.5 * BUSY_MS / 1000, `the main thread waited, yet used ${t2.main - t1.main} s`);
    // Every live thread is counted: together they are the process's own total (to a few ticks).
    const total = cpuSeconds([pid]);
    assert.ok(Math.abs(t2.main + t2.other - total) < 0.1, `threads ${t2.main + t2.other} s, process ${total} s`);
  } finally {
    await worker.terminate();
  }
});
