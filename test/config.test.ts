import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../src/cli/common.js';
import { parseRunConfig } from '../src/model/config.js';
import { initParams } from '../src/model/init.js';
import { buildLayout } from '../src/model/layout.js';
import { UsageError } from '../src/util/errors.js';

test('the 124M configuration has 162,419,712 parameters in a contiguous layout', () => {
  const layout = buildLayout(loadConfig('gpt2-124m-verdict').model);
  assert.equal(layout.totalSize, 162_419_712);
  let offset = 0;
  for (const p of layout.params) {
    assert.equal(p.offset, offset, p.name);
    offset += p.size;
  }
  assert.equal(layout.params[0]!.name, 'tok_emb.weight');
  assert.equal(layout.byName.get('trf_blocks.11.ff.layers.2.weight')!.shape.join('x'), '3072x768');
  assert.equal(layout.params.at(-1)!.name, 'out_head.weight');
  for (const [s, e] of layout.blockRanges) assert.equal(e - s, 7_085_568);
});

test('initialisation follows PyTorch defaults and is seeded', () => {
  const layout = buildLayout(loadConfig('tiny').model);
  const w = initParams(layout, 7);
  assert.deepEqual(w, initParams(layout, 7));
  assert.notDeepEqual(w.subarray(0, 100), initParams(layout, 8).subarray(0, 100));
  const view = (name: string) => { const p = layout.byName.get(name)!; return w.subarray(p.offset, p.offset + p.size); };
  const ff2 = view('trf_blocks.0.ff.layers.2.weight');
  const bound = 1 / Math.sqrt(4 * layout.config.embDim);
  assert.ok(ff2.every((v) => Math.abs(v) <= bound));
  assert.ok(Math.max(...ff2) > 0.9 * bound, 'uniform fills its range');
  const emb = view('tok_emb.weight');
  const mean = emb.reduce((a, b) => a + b, 0) / emb.length;
  const variance = emb.reduce((a, b) => a + (b - mean) ** 2, 0) / emb.length;
  assert.ok(Math.abs(mean) < 0.01 && Math.abs(variance - 1) < 0.01, `N(0,1): mean ${mean} var ${variance}`);
  assert.ok(view('trf_blocks.1.norm2.scale').every((v) => v === 1));
  assert.ok(view('final_norm.shift').every((v) => v === 0));
});

test('config validation rejects malformed and inconsistent configs with a clear message', () => {
  const good = loadConfig('tiny');
  const bad = (patch: (c: Record<string, Record<string, unknown>>) => void, pattern: RegExp) => {
    const c = JSON.parse(JSON.stringify(good)) as Record<string, Record<string, unknown>>;
    patch(c);
    assert.throws(() => parseRunConfig(c), (e: Error) => e instanceof UsageError && pattern.test(e.message));
  };
  bad((c) => { c.model!.nHeads = 5; }, /embDim \(32\) must be divisible by model.nHeads \(5\)/);
  bad((c) => { c.model!.embDim = 'big'; }, /model.embDim" must be a positive integer/);
  bad((c) => { delete c.training!.lr; }, /missing field "training.lr"/);
  bad((c) => { c.training!.extra = 1; }, /unknown field "training.extra"/);
  bad((c) => { c.model!.dropRate = 1; }, /dropRate/);
  assert.throws(() => parseRunConfig([]), UsageError);
  assert.throws(() => loadConfig('tiny', { batchSize: 0 }), /batchSize/);
});
