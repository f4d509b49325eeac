import { native, type NativeKernels } from '../native/kernels.js';

/**
 * bfloat16 for the optional `--wire bf16`: the upper 16 bits of a float32, rounded to nearest
 * even. Halves the bytes on the wire; sums stay float32.
 */

/** The bf16 bits of float32 bits `x`: round to nearest even; NaN stays a (quiet) NaN. */
function bf16Bits(x: number): number {
  return (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

export function toBf16(values: Float32Array, out = new Uint16Array(values.length), kernels: NativeKernels | null = native): Uint16Array {
  if (kernels) {
    kernels.toBf16(values, out);
    return out;
  }
  const bits = bitsOf(values);
  for (let i = 0; i < values.length; i++) out[i] = bf16Bits(bits[i]!);
  return out;
}

export function fromBf16(values: Uint16Array, out = new Float32Array(values.length), kernels: NativeKernels | null = native): Float32Array {
  if (kernels) {
    kernels.fromBf16(values, out);
    return out;
  }
  const bits = bitsOf(out);
  for (let i = 0; i < values.length; i++) bits[i] = values[i]! << 16;
  return out;
}

/** Rounds float32 values to bfloat16 in place: what a bf16 round trip gives. */
export function roundToBf16(values: Float32Array, kernels: NativeKernels | null = native): void {
  if (kernels) {
    kernels.roundToBf16(values);
    return;
  }
  const bits = bitsOf(values);
  for (let i = 0; i < values.length; i++) bits[i] = bf16Bits(bits[i]!) << 16;
}
