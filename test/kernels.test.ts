import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { loadConfig } from '../src/cli/common.js';
import { initBackend } from '../src/model/backend.js';
import { disposeWeights, uploadWeights } from '../src/model/gpt.js';
import { initParams } from '../src/model/init.js';
import { buildLayout } from '../src/model/layout.js';
import { installKernels, preferBlas } from '../src/model/provider.js';
import { forwardBackward, type LocalBatch } from '../src/model/step.js';
import { native } from '../src/native/kernels.js';
import { Rng } from '../src/util/rng.js';
import { CLI, maxRelativeDifference, PROVIDERS, scratchDir, VERDICT } from './helpers.js';

before(async () => {
  await initBackend('wasm', 'wasm');
});

const fast = PROVIDERS.filter((p) => p !== 'wasm');

interface Case { a: number[]; b: number[]; ta: boolean; tb: boolean }

/** Random and edge shapes, every transpose, batches and one-sided broadcasts (and a mixed one tfjs takes). */
function cases(): Case[] {
  const rng = new Rng(7);
  const dims = (m: number, n: number, k: number, ta: boolean, tb: boolean, outerA: number[] = [], outerB: number[] = []): Case => ({
    a: [...outerA, ...(ta ? [k, m] : [m, k])], b: [...outerB, ...(tb ? [n, k] : [k, n])], ta, tb,
  });
  const out: Case[] = [];
  const flags = [[false, false], [true, false], [false, true], [true, true]] as const;
  for (let i = 0; i < 24; i++) {
    const [ta, tb] = flags[i % 4]!;
    out.push(dims(1 + rng.below(70), 1 + rng.below(70), 1 + rng.below(70), ta, tb));
  }
  for (const [m, n, k] of [[1, 1, 1], [13, 31, 33], [14, 32, 1], [15, 33, 257], [97, 130, 300]]) {
    for (const [ta, tb] of flags) out.push(dims(m!, n!, k!, ta, tb));
  }
  out.push(dims(8, 9, 10, false, true, [3], [3]), dims(8, 9, 10, true, false, [2, 3], [2, 3]), dims(7, 5, 6, false, false, [], [4]),
    dims(7, 5, 6, true, true, [4], []), dims(6, 4, 5, false, false, [2, 1], [1, 3]));
  return out;
}

function products(list: Case[]): Float32Array[] {
  return list.map((c, i) => tf.tidy(() => {
    const a = tf.randomNormal(c.a, 0, 1, 'float32', 2 * i + 1);
    const b = tf.randomNormal(c.b, 0, 1, 'float32', 2 * i + 2);
    return tf.matMul(a, b, c.ta, c.tb).dataSync() as Float32Array;
  }));
}

for (const provider of fast) {
  test(`${provider} matmul equals wasm's kernel on ${cases().length} shapes (transposes, batches, broadcasts), with the same bits on a repeat`, () => {
    installKernels('wasm');
    const reference = products(cases());
    installKernels(provider);
    try {
      const ours = products(cases());
      const again = products(cases());
      ours.forEach((values, i) => {
        const d = maxRelativeDifference(values, reference[i]!);
        assert.ok(d <= 1e-5, `case ${JSON.stringify(cases()[i])}: relative difference ${d}`);
        assert.deepEqual(again[i], values, `case ${i} repeats bit for bit`);
      });
    } finally {
      installKernels('wasm');
    }
  });

  test(`${provider}: the tiny model's gradient equals wasm's within 1e-5, and no tensor leaks`, () => {
    const model = { ...loadConfig('tiny').model, contextLength: 16, nLayers: 2 };
    const layout = buildLayout(model);
    const flat = initParams(layout, 3);
    const rng = new Rng(4);
    const seqs = [0, 1].map(() => Int32Array.from({ length: 17 }, () => rng.below(model.vocabSize)));
    const batch: LocalBatch = { inputs: seqs.map((s) => s.subarray(0, 16)), targets: seqs.map((s) => s.subarray(1)), sampleIds: [0, 1] };
    const gradient = (p: 'wasm' | typeof provider) => {
      installKernels(p);
      const grad = new Float32Array(layout.totalSize);
      const m = uploadWeights(layout, flat);
      const before = tf.memory().numTensors;
      const r = forwardBackward(layout, m, flat, batch, { rate: 0.1, seed: 2, step: 0, sampleIds: batch.sampleIds }, grad);
      assert.equal(tf.memory().numTensors, before, `${p}: tensors left behind`);
      disposeWeights(m);
      return { grad, loss: r.sampleLoss };
    };
    try {
      const reference = gradient('wasm');
      const ours = gradient(provider);
      assert.ok(maxRelativeDifference(ours.grad, reference.grad) <= 1e-5, `gradient: ${maxRelativeDifference(ours.grad, reference.grad)}`);
      assert.ok(maxRelativeDifference(ours.loss, reference.loss) <= 1e-6);
    } finally {
      installKernels('wasm');
    }
  });
}

test('the addon refuses products whose operands leave the buffer', { skip: !native && 'the native addon is not built' }, () => {
  const k = native!;
  const buffer = new ArrayBuffer(3 * 16 * 4);
  const call = (aOffset: number, m: number, batch = 1, stride = 0) => () => k.matmul(buffer, aOffset, 64, 128, batch, m, 4, 4, false, false, stride, 0, false);
  call(0, 4)();
  assert.throws(call(132, 4), /do not lie inside the buffer/, 'A runs past the end');
  assert.throws(call(2, 4), /do not lie inside the buffer/, 'misaligned');
  assert.throws(call(0, 5), /do not lie inside the buffer/, 'C runs past the end');
  assert.throws(call(0, 4, 2, 40), /do not lie inside the buffer/, 'the second A runs past the end');
  assert.throws(call(-4, 4), /do not lie inside the buffer/, 'negative offset');
  assert.throws(call(0, 2.5), /do not lie inside the buffer/, 'fractional size');
  assert.throws(() => k.matmul(new Float32Array(4) as unknown as ArrayBuffer, 0, 0, 0, 1, 1, 1, 1, false, false, 0, 0, false), /expects an ArrayBuffer/);
});

const tinyRun = ['train', '--config', 'tiny', '--max-steps', '1', '--workers', '1', '--data', VERDICT];

test('a kernel choice that cannot run stops with one line and exit 2, creating nothing', () => {
  const out = join(scratchDir('kernels'), 'run');
  const refusals: Array<[Record<string, string>, string, RegExp]> = [
    [{ GPT_DDP_KERNELS: 'js' }, 'native', /^gpt-ddp: --kernels native: the native addon is not available \(.+\)$/],
    [{ GPT_DDP_KERNELS: 'js' }, 'blas', /^gpt-ddp: --kernels blas: the native addon is not available/],
  ];
  if (native) refusals.push([{ GPT_DDP_BLAS: '/nonexistent/libcblas.so' }, 'blas', /^gpt-ddp: --kernels blas: GPT_DDP_BLAS=\/nonexistent\/libcblas.so has no cblas_sgemm or does not load$/]);
  for (const [env, choice, message] of refusals) {
    const r = spawnSync(process.execPath, [CLI, ...tinyRun, '--kernels', choice, '--out', out], { env: { ...process.env, ...env }, encoding: 'utf8' });
    assert.equal(r.status, 2, `${choice} ${JSON.stringify(env)}: ${r.stderr}`);
    assert.match(r.stderr.trim(), message);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.ok(!existsSync(out), 'nothing created');
  }
});

test('without the addon, auto runs on wasm and the start line says why', () => {
  const r = spawnSync(process.execPath, [CLI, ...tinyRun, '--out', join(scratchDir('kernels'), 'run')], { env: { ...process.env, GPT_DDP_KERNELS: 'js' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /kernels: wasm \(XNNPACK\) matmul, as the native addon is missing \+ JavaScript \(GPT_DDP_KERNELS=js\) optimizer/);
});

test('the start line names the provider that runs', { skip: fast.length === 0 && 'no native provider here' }, () => {
  for (const provider of fast) {
    const r = spawnSync(process.execPath, [CLI, ...tinyRun, '--kernels', provider, '--out', join(scratchDir('kernels'), 'run')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const expected = provider === 'blas' ? /kernels: \S+ [\d.]+ \(\w+\) sgemm \+ native optimizer/ : /kernels: gpt-ddp GEMM \((avx512|avx2|generic)\) \+ native optimizer/;
    assert.match(r.stdout, expected);
  }
});

test('auto takes a CBLAS unless it is an OpenBLAS held to narrower vectors than our GEMM', () => {
  assert.equal(preferBlas('Haswell', 'avx512'), false, 'OPENBLAS_CORETYPE=Haswell on an AVX-512 machine');
  assert.equal(preferBlas('SkylakeX', 'avx512'), true);
  assert.equal(preferBlas('COOPERLAKE', 'avx512'), true, 'core names in any case');
  assert.equal(preferBlas('Haswell', 'avx2'), true, 'as wide as our GEMM');
  assert.equal(preferBlas('', 'avx512'), true, 'BLIS or MKL: not OpenBLAS, trusted');
});

const openblasX86 = native?.loadBlas().core && native.gemmIsa() !== 'generic';

test('auto on this machine: the start line follows OPENBLAS_CORETYPE', { skip: !openblasX86 && 'no OpenBLAS with x86 kernels here' }, () => {
  const isa = native!.gemmIsa();
  for (const core of ['Haswell', 'SkylakeX']) {
    if (core === 'SkylakeX' && isa !== 'avx512') continue;
    const r = spawnSync(process.execPath, [CLI, ...tinyRun, '--out', join(scratchDir('kernels'), 'run')], { env: { ...process.env, OPENBLAS_CORETYPE: core }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const blas = /kernels: OpenBLAS [\d.]+ \((\w+)\) sgemm \+ native optimizer/.exec(r.stdout);
    if (preferBlas(core, isa)) assert.equal(blas?.[1]?.toLowerCase(), core.toLowerCase(), r.stdout);
    else assert.match(r.stdout, /kernels: gpt-ddp GEMM \(avx512\) \+ native optimizer/);
  }
});

test('the install script leaves an up-to-date addon alone (npx runs it again in the clone)', { skip: native ? false : 'the native addon is not built here' }, () => {
  const root = join(CLI, '..', '..', '..', '..');
  const addon = join(root, 'build', 'Release', 'gpt_ddp_kernels.node');
  const before = statSync(addon);
  // No PATH: had it wanted to rebuild, node-gyp could not be found and the addon would be gone.
  const r = spawnSync(process.execPath, [join(root, 'native', 'install.mjs')], { encoding: 'utf8', env: { PATH: '' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /built and up to date/);
  const after = statSync(addon);
  assert.deepEqual([after.ino, after.mtimeMs], [before.ino, before.mtimeMs], 'not rebuilt');
});
