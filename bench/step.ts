/**
 * bench:step — one worker's training step of a config (default: the 124M model, batch 2 x 256)
 * on one thread, for each matmul provider, next to PyTorch's step on the same thread count when
 * Debian's python3-torch is installed. Steps of every provider and of PyTorch are interleaved, so
 * all see the same machine state. Prints the matmul rate on the model's shapes (with OpenBLAS's
 * own rate, called directly, when it is installed), each step phase's median and the ratios.
 * Usage: npm run bench:step -- [--kernels wasm,native,blas] [--steps 5] [--config C] [--batch B] [--no-torch]
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/cli/common.js';
import { median } from '../src/math/stats.js';
import { initBackend, wasmHeapBytes } from '../src/model/backend.js';
import { trainStepFlops } from '../src/model/flops.js';
import { disposeWeights, uploadWeights } from '../src/model/gpt.js';
import { initParams } from '../src/model/init.js';
import { buildLayout, HEAD_BLOCK } from '../src/model/layout.js';
import { availableProviders, installKernels, resolveKernels, type ProviderChoice } from '../src/model/provider.js';
import { forwardBackward } from '../src/model/step.js';
import { native } from '../src/native/kernels.js';
import { Rng } from '../src/util/rng.js';
import { TorchStep } from './torch-env.js';

const { values: args } = parseArgs({
  options: {
    kernels: { type: 'string' },
    steps: { type: 'string', default: '5' },
    config: { type: 'string', default: 'gpt2-124m-verdict' },
    batch: { type: 'string' },
    'no-torch': { type: 'boolean', default: false },
  },
});

const config = loadConfig(args.config!);
const B = Number(args.batch ?? config.training.batchSize);
const T = config.model.contextLength;
const D = config.model.embDim;
const steps = Number(args.steps);
const layout = buildLayout(config.model);
const GFLOP = 1e9;

await initBackend('wasm', 'wasm');
const available = availableProviders();
const providers = args.kernels ? (args.kernels.split(',') as ProviderChoice[]) : available;
for (const p of providers) if (!available.includes(p)) throw new Error(`--kernels ${p} cannot run here (available: ${available.join(', ')})`);

/** The model's product shapes at this batch: [m, k, n, transposeA, transposeB, batch, what]. */
const rows = B * T;
const hd = D / config.model.nHeads;
const SHAPES: Array<[number, number, number, boolean, boolean, number, string]> = [
  [rows, D, 3 * D, false, false, 1, 'q/k/v projections'],
  [rows, D, 4 * D, false, false, 1, 'feed-forward in'],
  [rows, 4 * D, D, false, false, 1, 'feed-forward out'],
  [rows, D, D, false, true, 1, 'input gradient (A B^T)'],
  [D, rows, 4 * D, true, false, 1, 'weight gradient (A^T B)'],
  [T, hd, T, false, true, B * config.model.nHeads, 'attention scores (batched)'],
  [T, T, hd, false, false, B * config.model.nHeads, 'attention context (batched)'],
  [rows, D, HEAD_BLOCK, false, false, 1, 'vocabulary head block'],
];

/** Median seconds of `run` over 7 calls after one warm-up. */
function time(run: () => void): number {
  const times: number[] = [];
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    run();
    if (i > 0) times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/** GFLOP/s of each shape through tfjs with the installed provider (fresh operands, as in a step). */
function tfjsRates(): number[] {
  return SHAPES.map(([m, k, n, ta, tb, batch]) => {
    const shape = (r: number, c: number, t: boolean) => (batch > 1 ? [batch, ...(t ? [c, r] : [r, c])] : t ? [c, r] : [r, c]);
    const a = tf.randomNormal(shape(m, k, ta));
    const bs = Array.from({ length: 8 }, () => tf.randomNormal(shape(k, n, tb)));
    let i = 0;
    // wasm kernels run synchronously: the product is done when matMul returns.
    const sec = time(() => tf.matMul(a, bs[i++]!, ta, tb).dispose());
    tf.dispose([a, ...bs]);
    return (2 * m * n * k * batch) / sec / GFLOP;
  });
}

/** GFLOP/s of the system CBLAS called directly on a plain buffer: its own rate, without tfjs. */
function blasRates(): number[] {
  return SHAPES.map(([m, k, n, ta, tb, batch]) => {
    const floats = batch * (m * k + k * n + m * n);
    const buffer = new ArrayBuffer(floats * 4);
    const values = new Float32Array(buffer);
    const rng = new Rng(5);
    for (let i = 0; i < floats; i++) values[i] = rng.normal();
    const b = 4 * batch * m * k;
    const c = b + 4 * batch * k * n;
    const sec = time(() => native!.matmul(buffer, 0, b, c, batch, m, n, k, ta, tb, m * k, k * n, true));
    return (2 * m * n * k * batch) / sec / GFLOP;
  });
}

const torch = args['no-torch'] ? null : await TorchStep.start({ config: args.config!, threads: 1, batch: B });
if (!torch && !args['no-torch']) console.log(`PyTorch: ${TorchStep.unavailable()}`);

const rates = new Map<ProviderChoice, number[]>();
for (const p of providers) {
  installKernels(p);
  rates.set(p, tfjsRates());
}
const blasDirect = providers.includes('blas') ? blasRates() : null;

const rng = new Rng(1);
const tokens = () => Int32Array.from({ length: T + 1 }, () => rng.below(config.model.vocabSize));
const flat = initParams(layout, 1);
const grad = new Float32Array(layout.totalSize);
const phases = new Map<ProviderChoice, Map<string, number[]>>(providers.map((p) => [p, new Map()]));
const totals = new Map<ProviderChoice, number[]>(providers.map((p) => [p, []]));
const torchTimes: number[] = [];
for (let s = 0; s <= steps; s++) {
  const seqs = Array.from({ length: B }, tokens);
  const batch = { inputs: seqs.map((q) => q.subarray(0, T)), targets: seqs.map((q) => q.subarray(1)), sampleIds: seqs.map((_, i) => i) };
  for (const p of providers) {
    installKernels(p);
    const t0 = performance.now();
    const m = uploadWeights(layout, flat);
    const upload = performance.now() - t0;
    const r = forwardBackward(layout, m, flat, batch, { rate: config.model.dropRate, seed: 1, step: s, sampleIds: batch.sampleIds }, grad);
    const total = (performance.now() - t0) / 1000;
    disposeWeights(m);
    process.stderr.write(`  ${p} step ${s}/${steps}${s === 0 ? ' (warm-up)' : ''}: ${total.toFixed(2)} s\n`);
    if (s === 0) continue;
    totals.get(p)!.push(total);
    const table = phases.get(p)!;
    for (const [k, v] of Object.entries({ 'weights upload': upload, ...r.phases })) table.set(k, [...(table.get(k) ?? []), v / 1000]);
  }
  if (torch) {
    const t = await torch.step();
    process.stderr.write(`  PyTorch step ${s}/${steps}${s === 0 ? ' (warm-up)' : ''}: ${t.toFixed(2)} s\n`);
    if (s > 0) torchTimes.push(t);
  }
}
torch?.close();

const label = (p: ProviderChoice) => `${p}: ${p === 'wasm' ? 'wasm (XNNPACK)' : resolveKernels(p).description}`;
console.log(`\n## bench:step — ${args.config} (${layout.totalSize.toLocaleString('en-US')} params), batch ${B} x ${T}, one thread, median of ${steps} steps\n`);
console.log(`Providers: ${providers.map(label).join('; ')}.${torch ? ` PyTorch ${torch.info}.` : ''}\n`);
console.log(`| matmul GFLOP/s (fresh operands) | ${providers.join(' | ')}${blasDirect ? ' | BLAS called directly' : ''} |`);
console.log(`| --- |${' ---: |'.repeat(providers.length + (blasDirect ? 1 : 0))}`);
SHAPES.forEach(([m, k, n, ta, tb, batch, what], i) => {
  const dims = `${batch > 1 ? `${batch} x ` : ''}[${m}x${k}]${ta ? '^T' : ''} x [${k}x${n}]${tb ? '^T' : ''}`;
  const cells = providers.map((p) => rates.get(p)![i]!.toFixed(1));
  console.log(`| ${what}: ${dims} | ${cells.join(' | ')}${blasDirect ? ` | ${blasDirect[i]!.toFixed(1)}` : ''} |`);
});
const names = [...phases.get(providers[0]!)!.keys()];
console.log(`\n| step phase (median s) | ${providers.join(' | ')} |\n| --- |${' ---: |'.repeat(providers.length)}`);
for (const k of names) console.log(`| ${k} | ${providers.map((p) => median(phases.get(p)!.get(k) ?? [0]).toFixed(3)).join(' | ')} |`);
const stepFlops = trainStepFlops(config.model, B, T);
console.log(`| **whole step** | ${providers.map((p) => `**${median(totals.get(p)!).toFixed(2)}**`).join(' | ')} |`);
console.log(`| achieved GFLOP/s (matmul FLOPs counted once) | ${providers.map((p) => (stepFlops / median(totals.get(p)!) / GFLOP).toFixed(1)).join(' | ')} |`);
if (torch) {
  const t = median(torchTimes);
  console.log(`| PyTorch step (same thread count, interleaved) | ${providers.map(() => t.toFixed(2)).join(' | ')} |`);
  console.log(`| **ratio to PyTorch** | ${providers.map((p) => `**${(median(totals.get(p)!) / t).toFixed(2)}x**`).join(' | ')} |`);
}
console.log(`\nPeak wasm heap over all providers: ${(wasmHeapBytes() / 2 ** 30).toFixed(2)} GiB (run one provider with --kernels to see its own).`);
