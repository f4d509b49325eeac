import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { loadConfig } from '../src/cli/common.js';
import { initBackend } from '../src/model/backend.js';
import { installKernels, type ProviderChoice } from '../src/model/provider.js';
import type { DropoutPlan } from '../src/model/dropout.js';
import { generate, nextTokenLogits } from '../src/model/generate.js';
import { argmax, pickToken } from '../src/model/sampling.js';
import { blockBackward, blockForward, blockForwardSaving, disposeActivations } from '../src/model/block.js';
import { blockList, causalBias, disposeWeights, mapBlock, uploadWeights } from '../src/model/gpt.js';
import { initParams } from '../src/model/init.js';
import { buildLayout } from '../src/model/layout.js';
import { gelu, geluBackward, layerNorm, layerNormBackward, matmulBackward } from '../src/model/ops.js';
import { sampleLosses } from '../src/model/inference.js';
import { forwardBackward, type LocalBatch } from '../src/model/step.js';
import { Rng } from '../src/util/rng.js';
import { maxRelativeDifference, PROVIDERS } from './helpers.js';

before(async () => {
  await initBackend('wasm', 'wasm');
});

function randn(shape: number[], seed: number): tf.Tensor {
  const r = new Rng(seed);
  return tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r.normal()), shape);
}

/** Runs fn on a backend and returns its outputs' values. */
async function on(backend: string, fn: () => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const outs = tf.tidy(fn);
  const vals = outs.map((t) => t.dataSync() as Float32Array);
  tf.dispose(outs);
  await tf.setBackend('wasm');
  return vals;
}

test('wasm kernel replacements (Slice, SplitV, UnsortedSegmentSum) match the cpu backend', async () => {
  const cases = (): tf.Tensor[] => {
    const x = randn([3, 5, 7], 1);
    const table = randn([11, 4], 2);
    const ids = tf.tensor1d([3, 0, 3, 10, 7, 3], 'int32');
    const dy = randn([6, 4], 3);
    const gatherGrad = tf.grad((t: tf.Tensor) => tf.mul(tf.gather(t, ids), dy).sum())(table);
    return [
      tf.slice(x, [1, 2, 3], [2, 3, 4]), tf.slice(x, [0, 1, 0], [3, 1, 7]), tf.slice(randn([40], 4), [5], [30]),
      ...tf.split(x, [1, 3, 3], 2), ...tf.split(x, 3, 0),
      tf.unsortedSegmentSum(randn([6, 4], 5), ids, 12), gatherGrad,
    ];
  };
  const cpu = await on('cpu', cases);
  const wasm = await on('wasm', cases);
  const sums = cpu.length - 2; // the segment sums may add in another order
  cpu.forEach((c, i) => {
    if (i < sums) assert.deepEqual(wasm[i], c, `case ${i}`);
    else assert.ok(maxRelativeDifference(wasm[i]!, c) < 1e-6, `case ${i}`);
  });
});

test('hand-written backward passes match tfjs autodiff of the plain formulas', () => {
  const x = randn([6, 8], 10) as tf.Tensor2D;
  const w = randn([8, 5], 11) as tf.Tensor2D;
  const scale = randn([8], 12) as tf.Tensor1D;
  const shift = randn([8], 13) as tf.Tensor1D;
  const close = (a: tf.Tensor, b: tf.Tensor, what: string) => {
    const d = maxRelativeDifference(a.dataSync(), b.dataSync());
    assert.ok(d < 2e-5, `${what}: ${d}`);
  };
  tf.tidy(() => {
    const dy5 = randn([6, 5], 20) as tf.Tensor2D;
    const auto = tf.grads((a, b) => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D))([x, w], dy5);
    matmulBackward(dy5, x, w).forEach((g, i) => close(g, auto[i]!, `matmul ${i}`));

    const dy8 = randn([6, 8], 21) as tf.Tensor2D;
    const plainNorm = (a: tf.Tensor, s: tf.Tensor, b: tf.Tensor) => {
      const mean = tf.mean(a, -1, true);
      const variance = tf.mean(tf.square(tf.sub(a, mean)), -1, true);
      return tf.add(tf.mul(tf.div(tf.sub(a, mean), tf.sqrt(tf.add(variance, 1e-5))), s), b);
    };
    const norm = layerNorm(x, scale, shift);
    close(norm.y, plainNorm(x, scale, shift), 'layerNorm value');
    const autoNorm = tf.grads(plainNorm)([x, scale, shift], dy8);
    layerNormBackward(dy8, norm, scale).forEach((g, i) => close(g, autoNorm[i]!, `layerNorm ${i}`));

    const plainGelu = (a: tf.Tensor) => tf.mul(tf.mul(0.5, a), tf.add(1, tf.tanh(
      tf.mul(Math.sqrt(2 / Math.PI), tf.add(a, tf.mul(0.044715, tf.pow(a, 3)))))));
    const g = gelu(x);
    close(g.y, plainGelu(x), 'gelu value');
    close(geluBackward(dy8, x, g.s), tf.grad(plainGelu)(x, dy8), 'gelu gradient');
  });
});

/** Runs a test body with the provider's matmul in place, then puts wasm's back. */
function withProvider(provider: ProviderChoice, body: () => void): () => void {
  return () => {
    installKernels(provider);
    try {
      body();
    } finally {
      installKernels('wasm');
    }
  };
}

for (const provider of PROVIDERS) test(`${provider}: a block's hand-written backward matches tfjs autodiff of its forward (dropout on)`, withProvider(provider, () => {
  const { layout, flat } = tinySetup();
  const m = uploadWeights(layout, flat);
  const s = { batch: 2, time: 8, heads: 2 };
  const D = layout.config.embDim;
  tf.tidy(() => {
    const bias = causalBias(s);
    const mask = (shape: number[], seed: number) => tf.tidy(() => tf.mul(tf.cast(tf.greater(randn(shape, seed), -1), 'float32'), 1.2)) as tf.Tensor2D;
    const masks = { attention: mask([2 * 2 * 8, 8], 31), attnShortcut: mask([16, D], 32), ffShortcut: mask([16, D], 33) };
    const x = randn([16, D], 34) as tf.Tensor2D;
    const dy = randn([16, D], 35) as tf.Tensor2D;
    const block = m.blocks[1]!;
    const params = blockList(block);
    // The block's parameters as tf.grads arguments, in layout order.
    const fromList = (ps: tf.Tensor[]) => { let i = 0; return mapBlock(block, () => ps[i++]!); };
    const auto = tf.grads((xi, ...ps) => blockForward(xi as tf.Tensor2D, fromList(ps), s, bias, masks))([x, ...params], dy);
    const { acts } = blockForwardSaving(x, block, s, bias, masks);
    const ours = blockBackward(dy, block, s, masks, acts);
    disposeActivations(acts);
    [ours.dx, ...blockList(ours.grads)].forEach((g, i) => {
      const d = maxRelativeDifference(g.dataSync(), auto[i]!.dataSync());
      assert.ok(d < 1e-5, `gradient ${i}: ${d}`);
    });
  });
  disposeWeights(m);
}));

function tinySetup() {
  const model = { ...loadConfig('tiny').model, contextLength: 8, embDim: 16, nHeads: 2, nLayers: 2 };
  const layout = buildLayout(model);
  const flat = initParams(layout, 5);
  const seq = (o: number) => Int32Array.from({ length: 9 }, (_, i) => (i * 7919 + o * 104729) % 50257);
  const seqs = [seq(1), seq(2)];
  const batch: LocalBatch = { inputs: seqs.map((s) => s.subarray(0, 8)), targets: seqs.map((s) => s.subarray(1)), sampleIds: [4, 9] };
  return { layout, flat, batch };
}

for (const [provider, rate] of PROVIDERS.flatMap((p) => [[p, 0], [p, 0.3]] as const)) {
  test(`${provider}: block-wise backward matches finite differences on every parameter (dropout ${rate})`, withProvider(provider, () => {
    const { layout, flat, batch } = tinySetup();
    const plan: DropoutPlan | null = rate > 0 ? { rate, seed: 3, step: 2, sampleIds: batch.sampleIds } : null;
    const lossAt = (w: Float32Array): number => {
      const m = uploadWeights(layout, w);
      try {
        const losses = plan ? forwardBackward(layout, m, w, batch, plan, new Float32Array(layout.totalSize)).sampleLoss
          : sampleLosses(layout, m, w, batch);
        return losses.reduce((a, b) => a + b, 0);
      } finally {
        disposeWeights(m);
      }
    };
    const grad = new Float32Array(layout.totalSize);
    const m = uploadWeights(layout, flat);
    const result = forwardBackward(layout, m, flat, batch, plan, grad);
    const recomputed = new Float32Array(layout.totalSize);
    forwardBackward(layout, m, flat, batch, plan, recomputed, undefined, 0);
    disposeWeights(m);
    assert.deepEqual(recomputed, grad, 'recomputing every block gives the same gradient');
    // Without dropout, lossAt takes the inference path: an independent forward.
    if (!plan) assert.ok(Math.abs(result.sampleLoss.reduce((a, b) => a + b, 0) - lossAt(flat)) < 1e-3, 'forward losses agree');
    const rng = new Rng(9);
    const eps = 1e-2;
    for (const spec of layout.params) {
      const v = new Float32Array(layout.totalSize);
      let analytic = 0;
      for (let i = spec.offset; i < spec.offset + spec.size; i++) {
        v[i] = 2 * rng.uniform() - 1;
        analytic += v[i]! * grad[i]!;
      }
      const plus = flat.map((x, i) => x + eps * v[i]!);
      const minus = flat.map((x, i) => x - eps * v[i]!);
      const numeric = (lossAt(plus) - lossAt(minus)) / (2 * eps);
      const err = Math.abs(numeric - analytic) / Math.max(0.05, Math.abs(numeric));
      assert.ok(err < 0.02, `${spec.name}: numeric ${numeric}, analytic ${analytic}`);
    }
    assert.deepEqual(result.touchedRows, [...new Set([...batch.inputs[0]!, ...batch.inputs[1]!])].sort((a, b) => a - b));
  }));
}

test('greedy generation with the key-value cache equals the argmax of full forwards, past the context length', () => {
  const { layout, flat } = tinySetup();
  const m = uploadWeights(layout, flat);
  const live = tf.memory().numTensors;
  try {
    const prompt = [464, 1110, 373];
    const out = generate(layout, m, flat, prompt, 10, argmax);
    assert.equal(out.length, 13);
    assert.deepEqual(out.slice(0, 3), prompt);
    for (let n = 3; n < 13; n++) {
      const context = out.slice(0, n).slice(-layout.config.contextLength);
      assert.equal(out[n], argmax(nextTokenLogits(layout, m, flat, context)), `token ${n}`);
    }
    assert.equal(tf.memory().numTensors, live, 'generation leaves no tensors behind');
    const sample = (seed: number) => {
      const rng = new Rng(seed);
      return generate(layout, m, flat, prompt, 6, (l) => pickToken(l, { temperature: 1.5, topK: 40 }, rng));
    };
    assert.deepEqual(sample(7), sample(7), 'sampling is reproducible with a seed');
    assert.notDeepEqual(sample(7), sample(8));
  } finally {
    disposeWeights(m);
  }
});

test('sampling: temperature 0 is argmax, top-k keeps the k best, draws follow the softmax', () => {
  const logits = Float32Array.from([1, 3, 2, 0.5]);
  assert.equal(pickToken(logits, { temperature: 0, topK: 0 }, new Rng(1)), 1);
  const rng = new Rng(2);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 20000; i++) counts[pickToken(logits, { temperature: 1, topK: 2 }, rng)]!++;
  assert.equal(counts[0]! + counts[3]!, 0, 'only the top 2 are drawn');
  const p1 = Math.exp(3) / (Math.exp(3) + Math.exp(2));
  assert.ok(Math.abs(counts[1]! / 20000 - p1) < 0.015, `${counts}`);
  const one = new Rng(5);
  assert.ok(Array.from({ length: 50 }, () => pickToken(logits, { temperature: 2, topK: 1 }, one)).every((t) => t === 1));
});
