import { Rng } from '../util/rng.js';
import { convertHead, paramView, type ParamLayout } from './layout.js';

function uniformFill(view: Float32Array, rng: Rng, fanIn: number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  for (let i = 0; i < view.length; i++) view[i] = (2 * rng.uniform() - 1) * bound;
  return view;
}

/**
 * PyTorch-default initialisation: Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * Embedding N(0, 1), LayerNorm scale 1 and shift 0. Each parameter draws from its own seeded
 * stream, so adding a parameter does not change the others' values.
 */
export function initParams(layout: ParamLayout, seed: number, out?: Float32Array): Float32Array {
  const flat = out ?? new Float32Array(layout.totalSize);
  layout.params.forEach((spec, index) => {
    const view = paramView(flat, spec);
    const rng = new Rng(seed, 1000 + index);
    switch (spec.kind) {
      case 'embedding':
        for (let i = 0; i < view.length; i++) view[i] = rng.normal();
        break;
      case 'linear':
      case 'bias':
        uniformFill(view, rng, spec.fanIn);
        break;
      case 'headLinear': {
        // Drawn in the order of the [D, V] matrix, so the values do not depend on the blocking.
        const { embDim: D, vocabSize: V } = layout.config;
        convertHead(uniformFill(new Float32Array(spec.size), rng, spec.fanIn), D, V, true, view);
        break;
      }
      case 'normScale':
        view.fill(1);
        break;
      case 'normShift':
        view.fill(0);
        break;
    }
  });
  return flat;
}
