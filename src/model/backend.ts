import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { UsageError } from '../util/errors.js';
import { installKernels, type KernelChoice } from './provider.js';
import { registerWasmKernels } from './wasm-kernels.js';

export const BACKENDS = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];
export type BackendName = Exclude<BackendChoice, 'auto'>;

/** Whether @tensorflow/tfjs-node can be loaded here (it is an optional dependency). */
export async function tensorflowAvailable(): Promise<boolean> {
  try {
    // Optional dependency: present only where its native library could be installed.
    await import('@tensorflow/tfjs-node' as string);
    return true;
  } catch {
    return false;
  }
}

/**
 * Selects and initialises a tfjs backend: `auto` takes tfjs-node when it is installed, else
 * wasm; then puts the chosen matmul provider in place. Returns the name of the backend in use.
 */
export async function initBackend(choice: BackendChoice, kernels: KernelChoice): Promise<BackendName> {
  let name: BackendName;
  if (choice === 'tensorflow' || choice === 'auto') {
    if (await tensorflowAvailable()) {
      name = 'tensorflow';
    } else if (choice === 'tensorflow') {
      throw new UsageError('--backend tensorflow: @tensorflow/tfjs-node is not installed or failed to load');
    } else {
      name = 'wasm';
    }
  } else {
    name = choice;
  }
  if (name === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
    registerWasmKernels();
  }
  if (!(await tf.setBackend(name))) throw new Error(`tfjs backend "${name}" failed to initialise`);
  await tf.ready();
  installKernels(kernels);
  return name;
}

/** Bytes of the wasm heap (it only grows, so this is its peak); 0 on other backends. */
export function wasmHeapBytes(): number {
  if (tf.getBackend() !== 'wasm') return 0;
  // HEAPU8 exists at run time but is missing from the module typings.
  return ((tf.backend() as BackendWasm).wasm as unknown as { HEAPU8: Uint8Array }).HEAPU8.length;
}

/**
 * The values of a float32 tensor. On wasm this is a view into the heap, valid only until the
 * next tensor allocation: copy out of it at once.
 */
export function floatValues(t: tf.Tensor): Float32Array {
  if (tf.getBackend() === 'wasm') {
    return (tf.backend() as BackendWasm).typedArrayFromHeap(t) as Float32Array;
  }
  return t.dataSync() as Float32Array;
}
