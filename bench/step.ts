/**
 * bench:step — one worker's training step of a config (default: the 124M model, batch 2 x 256)
 * on each requested backend: median time of every phase, achieved GFLOP/s, the floor (matmul
 * FLOPs counted once at the plain-matmul rate measured in this run), the ratio to it, and peak
 * wasm heap. Usage: npm run bench:step -- [--backend wasm,cpu,tensorflow] [--steps 5] [--config C]
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/cli/common.js';
import { median } from '../src/math/stats.js';
import { initBackend, tensorflowAvailable, wasmHeapBytes, type BackendName } from '../src/model/backend.js';
import { forwardFlops, trainStepFlops } from '../src/model/flops.js';
import { disposeWeights, uploadWeights } from '../src/model/gpt.js';
import { initParams } from '../src/model/init.js';
import { buildLayout } from '../src/model/layout.js';
import { sampleLosses } from '../src/model/inference.js';
import { forwardBackward } from '../src/model/step.js';
import { Rng } from '../src/util/rng.js';

const { values: args } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    steps: { type: 'string', default: '5' },
    config: { type: 'string', default: 'gpt2-124m-verdict' },
    batch: { type: 'string' },
  },
});

const config = loadConfig(args.config!);
const B = Number(args.batch ?? config.training.batchSize);
const T = config.model.contextLength;
const steps = Number(args.steps);
const layout = buildLayout(config.model);
const GFLOP = 1e9;

/**
 * Median rate of a plain [512 x D] x [D x 4D] matmul, the model's commonest shape. With `fresh`,
 * every call gets a new right-hand operand, as in a training step, where the wasm kernel packs it
 * each time; otherwise the same operands repeat and the packing is cached (the kernel's best).
 */
function matmulRate(fresh: boolean): number {
  const D = config.model.embDim;
  const a = tf.randomNormal([512, D]);
  const bs = Array.from({ length: fresh ? 8 : 1 }, () => tf.randomNormal([D, 4 * D]));
  const times: number[] = [];
  for (let i = 0; i < 8; i++) {
    const b = bs[fresh ? i : 0]!;
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
    if (i > 0) times.push((performance.now() - t0) / 1000);
  }
  tf.dispose([a, ...bs]);
  return (2 * 512 * D * 4 * D) / median(times);
}

async function benchBackend(backend: BackendName): Promise<void> {
  await initBackend(backend);
  const rng = new Rng(1);
  const tokens = () => Int32Array.from({ length: T + 1 }, () => rng.below(config.model.vocabSize));
  const flat = initParams(layout, 1);
  const grad = new Float32Array(layout.totalSize);
  const rate = matmulRate(false);
  const freshRate = matmulRate(true);
  const phases = new Map<string, number[]>();
  const totals: number[] = [];
  for (let s = 0; s < steps + 1; s++) {
    const seqs = Array.from({ length: B }, tokens);
    const batch = { inputs: seqs.map((q) => q.subarray(0, T)), targets: seqs.map((q) => q.subarray(1)), sampleIds: seqs.map((_, i) => i) };
    const t0 = performance.now();
    const m = uploadWeights(layout, flat);
    const upload = performance.now() - t0;
    const r = forwardBackward(layout, m, flat, batch, { rate: config.model.dropRate, seed: 1, step: s, sampleIds: batch.sampleIds }, grad);
    const total = (performance.now() - t0) / 1000;
    disposeWeights(m);
    if (s === 0) continue; // warm-up
    totals.push(total);
    for (const [k, v] of Object.entries({ 'weights upload': upload, ...r.phases })) phases.set(k, [...(phases.get(k) ?? []), v / 1000]);
    process.stderr.write(`  ${backend} step ${s}/${steps}: ${total.toFixed(2)} s\n`);
  }
  const evalTimes: number[] = [];
  const m = uploadWeights(layout, flat);
  for (let s = 0; s < 3; s++) {
    const seqs = Array.from({ length: B }, tokens);
    const t0 = performance.now();
    sampleLosses(layout, m, flat, { inputs: seqs.map((q) => q.subarray(0, T)), targets: seqs.map((q) => q.subarray(1)) });
    evalTimes.push((performance.now() - t0) / 1000);
  }
  disposeWeights(m);

  const stepFlops = trainStepFlops(config.model, B, T);
  const fwd = forwardFlops(config.model, B, T);
  const step = median(totals);
  const evalSec = median(evalTimes);
  const rows: Array<[string, string]> = [];
  for (const [k, v] of phases) rows.push([k, median(v).toFixed(3)]);
  console.log(`\n## bench:step — ${backend}, ${args.config} (${layout.totalSize.toLocaleString('en-US')} params), batch ${B} x ${T}, median of ${steps} steps\n`);
  console.log('| phase | median s |\n| --- | ---: |');
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
  console.log('\n| figure | value |\n| --- | ---: |');
  const shape = `512x${config.model.embDim} @ ${config.model.embDim}x${4 * config.model.embDim}`;
  console.log(`| plain matmul rate (${shape}, operands reused): the floor's rate | ${(rate / GFLOP).toFixed(1)} GFLOP/s |`);
  console.log(`| plain matmul rate (${shape}, a fresh right operand per call) | ${(freshRate / GFLOP).toFixed(1)} GFLOP/s |`);
  console.log(`| training step: matmul FLOPs counted once | ${(stepFlops / GFLOP).toFixed(0)} GFLOP |`);
  console.log(`| training step: floor at that rate | ${(stepFlops / rate).toFixed(2)} s |`);
  console.log(`| training step: median | ${step.toFixed(2)} s |`);
  console.log(`| training step: ratio to floor | ${(step / (stepFlops / rate)).toFixed(3)} |`);
  console.log(`| training step: achieved | ${(stepFlops / step / GFLOP).toFixed(1)} GFLOP/s |`);
  console.log(`| eval forward (one batch): floor | ${(fwd.total / rate).toFixed(2)} s |`);
  console.log(`| eval forward (one batch): median | ${evalSec.toFixed(2)} s |`);
  console.log(`| eval forward (one batch): ratio to floor | ${(evalSec / (fwd.total / rate)).toFixed(3)} |`);
  console.log(`| peak wasm heap | ${backend === 'wasm' ? `${(wasmHeapBytes() / 2 ** 30).toFixed(2)} GiB` : 'n/a'} |`);
}

for (const backend of args.backend!.split(',') as BackendName[]) {
  if (backend === 'tensorflow' && !(await tensorflowAvailable())) {
    console.log('\n## bench:step — tensorflow: @tensorflow/tfjs-node is not installed here; skipped');
    continue;
  }
  await benchBackend(backend);
}
