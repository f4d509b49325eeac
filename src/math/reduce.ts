import { native, type NativeKernels } from '../native/kernels.js';

/**
 * Gradient arithmetic of the reduction. Dense parts add element-wise; the token embedding's
 * gradient stays sparse (only the rows of the tokens in the batch), as sorted rows of `width`.
 */

/** target[i] += source[i] for every i (float32 results, natively when the addon is built). */
export function addInto(target: Float32Array, source: Float32Array, kernels: NativeKernels | null = native): Float32Array {
  if (target.length !== source.length) throw new Error(`addInto: ${target.length} != ${source.length}`);
  if (kernels) kernels.addInto(target, source);
  else for (let i = 0; i < target.length; i++) target[i]! += source[i]!;
  return target;
}

/**
 * out[i] = a[i] + b[i]: the sums addInto(a, b) would leave in a, written to `out` instead (which
 * overlaps neither), so a sum lands where it is wanted without a copy.
 */
export function addTo(out: Float32Array, a: Float32Array, b: Float32Array, kernels: NativeKernels | null = native): Float32Array {
  if (out.length !== a.length || out.length !== b.length) throw new Error(`addTo: ${out.length}, ${a.length}, ${b.length}`);
  if (kernels) kernels.addTo(out, a, b);
  else for (let i = 0; i < out.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/** Index of the first NaN or infinity in `values`, or -1. */
export function firstNonFinite(values: Float32Array, kernels: NativeKernels | null = native): number {
  if (kernels) return kernels.firstNonFinite(values);
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}

/** Rows of a [rows, width] matrix, only those listed (sorted ascending, distinct). */
export interface SparseRows {
  rows: Int32Array;
  values: Float32Array;
}

/** a + b, rows of both kept; shared rows added. */
export function addRows(a: SparseRows, b: SparseRows, width: number): SparseRows {
  const rows: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.rows.length || j < b.rows.length) {
    const ra = i < a.rows.length ? a.rows[i]! : Infinity;
    const rb = j < b.rows.length ? b.rows[j]! : Infinity;
    rows.push(Math.min(ra, rb));
    if (ra <= rb) i++;
    if (rb <= ra) j++;
  }
  const values = new Float32Array(rows.length * width);
  i = 0;
  j = 0;
  rows.forEach((row, k) => {
    const out = values.subarray(k * width, (k + 1) * width);
    if (a.rows[i] === row) out.set(a.values.subarray(i * width, ++i * width));
    if (b.rows[j] === row) addInto(out, b.values.subarray(j * width, ++j * width));
  });
  return { rows: Int32Array.from(rows), values };
}

/** Copies the listed rows out of `matrix` (row-major, `width` columns) and zeroes them there. */
export function takeRows(matrix: Float32Array, rows: Iterable<number>, width: number): SparseRows {
  const sorted = Int32Array.from(new Set(rows)).sort();
  const values = new Float32Array(sorted.length * width);
  sorted.forEach((row, k) => {
    values.set(matrix.subarray(row * width, (row + 1) * width), k * width);
    matrix.fill(0, row * width, (row + 1) * width);
  });
  return { rows: sorted, values };
}

/** Writes rows into `matrix` (row-major, `width` columns). */
export function putRows(matrix: Float32Array, sparse: SparseRows, width: number): void {
  sparse.rows.forEach((row, k) => matrix.set(sparse.values.subarray(k * width, (k + 1) * width), row * width));
}

/** Zeroes the listed rows of `matrix`. */
export function clearRows(matrix: Float32Array, rows: Iterable<number>, width: number): void {
  for (const row of rows) matrix.fill(0, row * width, (row + 1) * width);
}
