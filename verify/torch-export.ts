/**
 * verify:torch, part 1: a small model's initial weights (model.safetensors in the reference
 * PyTorch names), a fixed batch, our mean loss for 3 AdamW steps on it (dropout off), our first
 * gradient and the weights after the 3 steps, written to DIR for verify/torch_crosscheck.py.
 * Usage: torch-export.js DIR [wasm|native|blas] (the matmul provider; default wasm).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelTensors } from '../src/checkpoint/checkpoint.js';
import { writeSafetensors } from '../src/checkpoint/safetensors.js';
import { adamwUpdate, ADAMW_DEFAULTS, newMoments } from '../src/math/adamw.js';
import { initBackend } from '../src/model/backend.js';
import { disposeWeights, uploadWeights } from '../src/model/gpt.js';
import { initParams } from '../src/model/init.js';
import { buildLayout } from '../src/model/layout.js';
import { matmulProvider, type ProviderChoice } from '../src/model/provider.js';
import { forwardBackward } from '../src/model/step.js';

const dir = process.argv[2] ?? 'verify-out';
mkdirSync(dir, { recursive: true });
const provider = (process.argv[3] ?? 'wasm') as ProviderChoice;
await initBackend('wasm', provider);
console.log(`verify:torch with the ${provider} matmul provider (${matmulProvider().description})`);
const model = { vocabSize: 50257, contextLength: 32, embDim: 64, nHeads: 4, nLayers: 2, dropRate: 0, qkvBias: false };
const layout = buildLayout(model);
const weights = initParams(layout, 11);
writeSafetensors(join(dir, 'init.safetensors'), modelTensors(layout, weights));
const seqs = [0, 1].map((o) => Int32Array.from({ length: model.contextLength + 1 }, (_, i) => (i * 7919 + o * 104729 + 13) % model.vocabSize));
const batch = { inputs: seqs.map((s) => s.subarray(0, -1)), targets: seqs.map((s) => s.subarray(1)), sampleIds: [0, 1] };
const moments = newMoments(layout.totalSize);
const losses: number[] = [];
for (let t = 1; t <= 3; t++) {
  const grad = new Float32Array(layout.totalSize);
  const m = uploadWeights(layout, weights);
  const r = forwardBackward(layout, m, weights, batch, null, grad);
  disposeWeights(m);
  losses.push(r.sampleLoss.reduce((a, b) => a + b, 0) / r.tokens);
  if (t === 1) writeSafetensors(join(dir, 'grad.safetensors'), modelTensors(layout, grad.map((g) => g / r.tokens)));
  adamwUpdate(weights, grad, moments, { lr: 4e-4, weightDecay: 0.1, ...ADAMW_DEFAULTS }, t, 1 / r.tokens);
}
writeSafetensors(join(dir, 'after3.safetensors'), modelTensors(layout, weights));
writeFileSync(join(dir, 'case.json'), JSON.stringify({ model, batch: seqs.map((s) => [...s]), losses }));
