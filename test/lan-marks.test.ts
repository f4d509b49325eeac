import assert from 'node:assert/strict';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { markSteps } from '../bench/lan-marks.js';
import { scratchDir } from './helpers.js';

const EVERY_MS = 5;
/** Long enough for several polls between two records. */
const GAP_MS = 100;

/** A fake run directory whose metrics.jsonl the test appends to, counting the records written. */
function fakeRun() {
  const dir = scratchDir('marks');
  const file = join(dir, 'metrics.jsonl');
  writeFileSync(file, '');
  let written = 0;
  return {
    dir,
    written: () => written,
    async append(...types: string[]) {
      for (const type of types) appendFileSync(file, `${JSON.stringify({ type, step: 0 })}\n`);
      written += types.length;
      await sleep(GAP_MS);
    },
    async appendRaw(text: string) {
      appendFileSync(file, text);
      await sleep(GAP_MS);
    },
  };
}

test('markSteps: a mark at step 0\'s evaluation and at each measured step; what came before is ignored', async () => {
  const run = fakeRun();
  const marking = markSteps(run.dir, 3, run.written, EVERY_MS);
  await run.append('member');
  await run.append('step');
  await run.append('eval');
  await run.appendRaw('{"type":"st');
  await run.appendRaw('ep","step":1}\n');
  await run.append('step');
  await run.append('step');
  await run.append('sample');
  assert.deepEqual(marking(), [3, 3, 4, 5], 'each mark taken once its record was complete; none after the last measured step');
});

test('markSteps: a record between the marks, steps too close together or a run that ends early give no marks, and say why', async () => {
  const between = fakeRun();
  const a = markSteps(between.dir, 2, between.written, EVERY_MS);
  for (const type of ['step', 'eval', 'step', 'sample', 'step']) await between.append(type);
  assert.match(String(a()), /a sample record came between the measured steps \(an epoch ended/);

  const close = fakeRun();
  const b = markSteps(close.dir, 2, close.written, EVERY_MS);
  await close.append('step', 'eval');
  await close.append('step', 'step');
  assert.match(String(b()), /steps too short to mark one by one/);

  const short = fakeRun();
  const c = markSteps(short.dir, 3, short.written, EVERY_MS);
  await short.append('step');
  await short.append('eval');
  await short.append('step');
  assert.equal(c(), 'the run ended before its measured steps were seen');
});
