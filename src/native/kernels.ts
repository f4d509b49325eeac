import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The optional native kernels (native/kernels.c, built by `npm ci` with node-gyp). Each gives the
 * same bits as its JavaScript twin in src/math; without the addon those run instead.
 */
export interface NativeKernels {
  adamw(
    params: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, start: number, end: number,
    decay: number, stepSize: number, bc2Sqrt: number, oneMinusB1: number, beta2: number, oneMinusB2: number, eps: number, gradScale: number,
  ): void;
  addInto(target: Float32Array, source: Float32Array): void;
  /** out[i] = a[i] + b[i]; out may not overlap a or b. */
  addTo(out: Float32Array, a: Float32Array, b: Float32Array): void;
  /** Index of the first NaN or infinity, or -1. */
  firstNonFinite(values: Float32Array): number;
  toBf16(values: Float32Array, out: Uint16Array): void;
  fromBf16(values: Uint16Array, out: Float32Array): void;
  roundToBf16(values: Float32Array): void;
  /**
   * For each of `batch` products, C_i = op(A_i) op(B_i) ([m x k] by [k x n], row-major float32) at
   * byte offsets into `buffer`, in place; A_i starts aStride floats after A_{i-1} (0: one A for all),
   * alike B_i; the C_i are contiguous. Through the loaded CBLAS when useBlas, else our own GEMM.
   */
  matmul(
    buffer: ArrayBuffer, aOffset: number, bOffset: number, cOffset: number, batch: number, m: number, n: number, k: number,
    transposeA: boolean, transposeB: boolean, aStride: number, bStride: number, useBlas: boolean,
  ): void;
  /**
   * Loads a system CBLAS once per process (GPT_DDP_BLAS names one): what was loaded, or why nothing
   * was, and for OpenBLAS the kernel family it runs (e.g. Haswell; empty for other libraries).
   */
  loadBlas(): { loaded: boolean; description: string; core: string };
  /** The instruction set our own GEMM runs with: avx512, avx2 or generic. */
  gemmIsa(): string;
}

const ADDON = fileURLToPath(new URL('../../../build/Release/gpt_ddp_kernels.node', import.meta.url));

function load(): { kernels: NativeKernels | null; status: string } {
  if (process.env.GPT_DDP_KERNELS === 'js') return { kernels: null, status: 'JavaScript (GPT_DDP_KERNELS=js)' };
  if (!existsSync(ADDON)) return { kernels: null, status: 'JavaScript (the native addon was not built: see npm ci\'s output)' };
  try {
    return { kernels: createRequire(import.meta.url)(ADDON) as NativeKernels, status: 'native' };
  } catch (err) {
    return { kernels: null, status: `JavaScript (the native addon did not load: ${(err as Error).message.split('\n')[0]})` };
  }
}

const loaded = load();
export const native: NativeKernels | null = loaded.kernels;
/** What runs the optimizer and the gradient sums, for the start line. */
export const kernelStatus: string = loaded.status;
