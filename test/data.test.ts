import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig, loadRunText } from '../src/cli/common.js';
import { batchIndices, dataFingerprint, epochBatches, evalTrainBatches, splitText, WindowDataset } from '../src/data/dataset.js';
import { decode, encode } from '../src/data/tokenizer.js';
import { loadVerdict } from '../src/data/verdict.js';
import { UsageError } from '../src/util/errors.js';
import { VERDICT, scratchDir } from './helpers.js';

const text = readFileSync(VERDICT, 'utf8');

test('The Verdict tokenises to the reference counts', () => {
  assert.equal(text.length, 20479);
  assert.equal(encode(text).length, 5145);
  const data = splitText(text, 0.9, 256);
  assert.equal(data.trainTokens.length, 4612);
  assert.equal(data.valTokens.length, 534);
  assert.equal(data.train.size, 18);
  assert.equal(data.val.size, 2);
  assert.equal(batchIndices(data.train.starts.map((_, i) => i), 2, true).length, 9);
  assert.equal(batchIndices([0, 1, 2], 2, false).length, 2, 'evaluation keeps the last partial batch');
  assert.equal(decode(encode('Every effort moves you')), 'Every effort moves you');
});

test('windows: input and target are shifted by one, stride = length', () => {
  const tokens = Int32Array.from({ length: 11 }, (_, i) => i);
  const ds = new WindowDataset(tokens, 4);
  assert.deepEqual(ds.starts, [0, 4]);
  assert.deepEqual([...ds.input(1)], [4, 5, 6, 7]);
  assert.deepEqual([...ds.target(1)], [5, 6, 7, 8]);
});

test('epoch order is a seeded permutation, different per epoch, drop-last', () => {
  const a = epochBatches(18, 2, 123, 0);
  assert.deepEqual(a, epochBatches(18, 2, 123, 0));
  assert.notDeepEqual(a, epochBatches(18, 2, 123, 1));
  assert.notDeepEqual(a, epochBatches(18, 2, 124, 0));
  assert.deepEqual(a.flat().sort((x, y) => x - y), Array.from({ length: 18 }, (_, i) => i));
  assert.equal(epochBatches(17, 2, 1, 0).length, 8);
  assert.equal(evalTrainBatches(18, 2, 123, 5, 5).length, 5);
});

test('data source precedence: --data, then VERDICT_PATH, then cache; offline error names --data', async () => {
  const dir = scratchDir('data');
  const [a, b, c] = ['a', 'b', 'c'].map((n) => {
    const p = join(dir, `${n}.txt`);
    writeFileSync(p, `text ${n}`);
    return p;
  });
  const saved = process.env.VERDICT_PATH;
  try {
    process.env.VERDICT_PATH = b;
    assert.equal((await loadVerdict(a, { cachePath: c })).text, 'text a');
    assert.equal((await loadVerdict(undefined, { cachePath: c })).text, 'text b');
    delete process.env.VERDICT_PATH;
    assert.equal((await loadVerdict(undefined, { cachePath: c })).text, 'text c');
    const missing = join(dir, 'none.txt');
    await assert.rejects(loadVerdict(undefined, { cachePath: missing, url: 'http://127.0.0.1:9/the-verdict.txt' }),
      (err: Error) => err instanceof UsageError && /--data/.test(err.message));
    await assert.rejects(loadVerdict(missing), (err: Error) => err instanceof UsageError && err.message.includes(missing));
  } finally {
    if (saved === undefined) delete process.env.VERDICT_PATH;
    else process.env.VERDICT_PATH = saved;
  }
});

test('text prepared once (compare) is taken as it is by a run split the same way, and split again from its text otherwise', async () => {
  const tiny = loadConfig('tiny');
  const missing = join(scratchDir('text'), 'nope.txt');
  const once = await loadRunText(VERDICT, tiny);
  assert.equal(once.fingerprint, dataFingerprint(splitText(text, 0.9, 32)));
  assert.equal(await loadRunText(missing, loadConfig('tiny', { batchSize: 4 }), once), once, 'not read nor tokenized again');
  const longer = { ...tiny, model: { ...tiny.model, contextLength: 64 } };
  const again = await loadRunText(missing, longer, once);
  assert.equal(again.source, once.source, 'from the text already read');
  assert.deepEqual([again.data.train.length, again.fingerprint], [64, once.fingerprint]);
  await assert.rejects(loadRunText(missing, loadConfig('tiny', { batchSize: 4000 }), once), /fewer than one batch of 4000/);
});
