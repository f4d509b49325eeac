import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/**
 * Kernels the wasm backend lacks or runs slowly, written against its heap directly.
 * - UnsortedSegmentSum: not registered in tfjs-backend-wasm 4.22, yet it is the gradient of
 *   `gather`, so any model that differentiates through an embedding lookup fails without it.
 * - Slice and SplitV: the stock kernels first copy the whole input out of the heap (readSync)
 *   for every piece, which makes the per-head split of attention cost a full copy per head.
 */

type KernelArgs = Parameters<tf.KernelFunc>[0];

function wasmOf(args: KernelArgs): BackendWasm {
  return args.backend as BackendWasm;
}

function unsortedSegmentSum(args: KernelArgs): tf.TensorInfo {
  const backend = wasmOf(args);
  const x = args.inputs.x!;
  const ids = args.inputs.segmentIds!;
  const numSegments = args.attrs!.numSegments as number;
  const idCount = ids.shape.reduce((a, b) => a * b, 1);
  const outShape = [numSegments, ...x.shape.slice(ids.shape.length)];
  const inner = idCount === 0 ? 0 : x.shape.reduce((a, b) => a * b, 1) / idCount;
  const out = backend.makeOutput(outShape, x.dtype);
  // makeOutput may grow the heap, so heap views are taken after it.
  const outVals = backend.typedArrayFromHeap(out);
  const xVals = backend.typedArrayFromHeap(x);
  const idVals = backend.typedArrayFromHeap(ids);
  outVals.fill(0);
  for (let i = 0; i < idCount; i++) {
    const seg = idVals[i]!;
    if (seg < 0 || seg >= numSegments) continue;
    const src = i * inner;
    const dst = seg * inner;
    for (let k = 0; k < inner; k++) outVals[dst + k]! += xVals[src + k]!;
  }
  return out;
}

function slice(args: KernelArgs): tf.TensorInfo {
  const backend = wasmOf(args);
  const x = args.inputs.x!;
  const [begin, size] = tf.slice_util.parseSliceParams(
    x as unknown as tf.Tensor, args.attrs!.begin as number[], args.attrs!.size as number[]);
  const out = backend.makeOutput(size, x.dtype);
  const outVals = backend.typedArrayFromHeap(out);
  const xVals = backend.typedArrayFromHeap(x);
  const rank = x.shape.length;
  const strides = tf.util.computeStrides(x.shape);
  // Copy contiguous runs along the last axis; walk the other axes with an odometer.
  const runLength = rank === 0 ? 1 : size[rank - 1]!;
  const outerShape = size.slice(0, Math.max(rank - 1, 0));
  const runs = outerShape.reduce((a, b) => a * b, 1);
  if (runLength === 0 || runs === 0) return out;
  const index = new Array<number>(outerShape.length).fill(0);
  for (let r = 0; r < runs; r++) {
    let src = rank === 0 ? 0 : begin[rank - 1]!;
    for (let d = 0; d < outerShape.length; d++) src += (begin[d]! + index[d]!) * strides[d]!;
    outVals.set(xVals.subarray(src, src + runLength), r * runLength);
    for (let d = outerShape.length - 1; d >= 0; d--) {
      if (++index[d]! < outerShape[d]!) break;
      index[d] = 0;
    }
  }
  return out;
}

function splitV(args: KernelArgs): tf.TensorInfo[] {
  const x = args.inputs.x!;
  const axis = tf.util.parseAxisParam(args.attrs!.axis as number, x.shape)[0]!;
  const sizes = tf.backend_util.prepareSplitSize(
    x as unknown as tf.Tensor, args.attrs!.numOrSizeSplits as number | number[], axis);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((s) => {
    const size = [...x.shape];
    size[axis] = s;
    const piece = slice({ ...args, attrs: { begin: [...begin], size } });
    begin[axis]! += s;
    return piece;
  });
}

let registered = false;

export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSum });
  tf.unregisterKernel('Slice', 'wasm');
  tf.registerKernel({ kernelName: 'Slice', backendName: 'wasm', kernelFunc: slice });
  tf.unregisterKernel('SplitV', 'wasm');
  tf.registerKernel({ kernelName: 'SplitV', backendName: 'wasm', kernelFunc: splitV });
}
