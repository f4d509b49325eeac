import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { kernelStatus, native } from '../native/kernels.js';
import { UsageError } from '../util/errors.js';

/**
 * The matrix-product provider of the wasm backend. wasm's own BatchMatMul (XNNPACK, 128-bit SIMD)
 * reaches a fifth of what the core can do; with the native addon built, the product runs in place
 * on the wasm heap through a system CBLAS (`blas`) or our own AVX-512/AVX2 GEMM (`native`).
 */
export const KERNEL_CHOICES = ['auto', 'blas', 'native', 'wasm'] as const;
export type KernelChoice = (typeof KERNEL_CHOICES)[number];
/** `backend`: a backend other than wasm, with its own kernels. */
export type MatmulProvider = 'blas' | 'native' | 'wasm' | 'backend';

interface Installed {
  provider: MatmulProvider;
  /** For the start line, e.g. "OpenBLAS 0.3.21 (SkylakeX) sgemm". */
  description: string;
}

/** A provider a user can ask for by name. */
export type ProviderChoice = Exclude<KernelChoice, 'auto'>;

/** The providers this machine can run: wasm always; native and blas where the addon and a CBLAS load. */
export function availableProviders(): ProviderChoice[] {
  return ['wasm', ...(native ? ['native' as const] : []), ...(native?.loadBlas().loaded ? ['blas' as const] : [])];
}

let installed: Installed = { provider: 'wasm', description: 'wasm (XNNPACK) matmul' };

/**
 * The provider a choice resolves to on this machine, or a UsageError saying why it cannot run.
 * Loads the system CBLAS when the choice may use it: call it on the main thread before worker
 * threads start (the library reads its environment when it loads).
 */
export function resolveKernels(choice: KernelChoice): Installed {
  if (choice === 'wasm') return { provider: 'wasm', description: 'wasm (XNNPACK) matmul' };
  if (!native) {
    if (choice === 'auto') return { provider: 'wasm', description: 'wasm (XNNPACK) matmul, as the native addon is missing' };
    throw new UsageError(`--kernels ${choice}: the native addon is not available (${addonProblem()})`);
  }
  const isa = native.gemmIsa();
  const ownGemm: Installed = { provider: 'native', description: `gpt-ddp GEMM (${isa})` };
  if (choice === 'native') return ownGemm;
  const blas = native.loadBlas();
  if (!blas.loaded) {
    if (choice === 'blas') throw new UsageError(`--kernels blas: ${blas.description}`);
    return ownGemm;
  }
  if (choice === 'auto' && !preferBlas(blas.core, isa)) return ownGemm;
  return { provider: 'blas', description: `${blas.description} sgemm` };
}

/** OpenBLAS 0.3's kernel families with AVX-512 code. */
const OPENBLAS_AVX512 = new Set(['skylakex', 'cooperlake', 'sapphirerapids']);

/**
 * Whether auto should take the loaded CBLAS over our GEMM: yes, unless our GEMM runs AVX-512 and
 * the CBLAS is an OpenBLAS held to narrower kernels, as OPENBLAS_CORETYPE=Haswell holds it here
 * (its step then takes 1.5x ours; with AVX-512 kernels each is within 10% of the other). Decided
 * from the instruction sets, never timed, so every process on a machine makes the same choice.
 * `openblasCore` is empty for other libraries, and for an OpenBLAS that does not name its core:
 * they are trusted.
 */
export function preferBlas(openblasCore: string, gemmIsa: string): boolean {
  return openblasCore === '' || gemmIsa !== 'avx512' || OPENBLAS_AVX512.has(openblasCore.toLowerCase());
}

function addonProblem(): string {
  return 'build it with `npm ci` or `npm run install`; it needs g++, make and python3';
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

let wasmBatchMatMul: tf.KernelFunc | null = null;

/** Dimensions of one product; null when the kernel cannot take the case (tfjs's kernel does). */
function productShape(a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean) {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = a.shape[transposeA ? ra - 1 : ra - 2]!;
  const k = a.shape[transposeA ? ra - 2 : ra - 1]!;
  const kb = b.shape[transposeB ? rb - 1 : rb - 2]!;
  const n = b.shape[transposeB ? rb - 2 : rb - 1]!;
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = tf.util.sizeFromShape(outerA);
  const batchB = tf.util.sizeFromShape(outerB);
  // Equal batch dimensions, or one side shared by every product; mixed broadcasts go to tfjs.
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  const outer = sameOuter || batchB === 1 ? outerA : batchA === 1 ? outerB : null;
  if (k !== kb || outer === null || m * n * k * batchA * batchB === 0) return null;
  return { m, n, k, batch: Math.max(batchA, batchB), aStride: batchA === 1 ? 0 : m * k, bStride: batchB === 1 ? 0 : k * n, outShape: [...outer, m, n] };
}

function batchMatMul(args: KernelArgs): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const transposeA = args.attrs!.transposeA as boolean;
  const transposeB = args.attrs!.transposeB as boolean;
  const s = productShape(a, b, transposeA, transposeB);
  if (!s || !native) return wasmBatchMatMul!(args) as tf.TensorInfo;
  const backend = args.backend as BackendWasm;
  const out = backend.makeOutput(s.outShape, 'float32');
  // makeOutput may grow the heap (a new ArrayBuffer), so the heap is taken after it.
  const heap = (backend.wasm as unknown as { HEAPU8: Uint8Array }).HEAPU8.buffer as ArrayBuffer;
  const offset = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId)!.memoryOffset;
  native.matmul(heap, offset(a), offset(b), offset(out), s.batch, s.m, s.n, s.k, transposeA, transposeB, s.aStride, s.bStride, installed.provider === 'blas');
  return out;
}

/**
 * Puts the chosen provider in place of wasm's BatchMatMul (after the wasm backend is ready, so
 * that the stock kernel, kept for the cases ours does not take, is set up). Other backends keep
 * their own kernels.
 */
export function installKernels(choice: KernelChoice): Installed {
  if (tf.getBackend() !== 'wasm') {
    installed = { provider: 'backend', description: `${tf.getBackend()} backend matmul` };
    return installed;
  }
  const wanted = resolveKernels(choice);
  if (!wasmBatchMatMul) wasmBatchMatMul = tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc;
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: wanted.provider === 'wasm' ? wasmBatchMatMul : batchMatMul });
  installed = wanted;
  return installed;
}

export function matmulProvider(): Installed {
  return installed;
}

/**
 * Whether a product with a transposed operand costs the same as a plain one. wasm's kernel is
 * ~13x slower when asked for one, so the model transposes explicitly there.
 */
export function transposesAreFree(): boolean {
  return installed.provider !== 'wasm';
}

/** What runs the products and the optimizer, e.g. "OpenBLAS 0.3.21 (SkylakeX) sgemm + native optimizer". */
export function kernelSummary(): string {
  return `${installed.description} + ${kernelStatus} optimizer`;
}
