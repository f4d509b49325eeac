/**
 * Seeded randomness. Everything random in a run (initial weights, data order, dropout masks,
 * sampling) derives from the run seed through these functions, so runs are reproducible and
 * independent of how work is split across workers.
 */

/** murmur3's 32-bit finaliser: a bijection on uint32 with full avalanche. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes a tuple of integers (each taken mod 2^32) into one uint32 key. */
export function hashKey(...parts: number[]): number {
  let h = 0x9747b28c;
  for (const p of parts) {
    h = fmix32((h ^ fmix32(p >>> 0)) + 0x9e3779b9);
  }
  return h;
}

/** The i-th uint32 of the stream named by `key` (counter-based: any element is computable alone). */
export function streamU32(key: number, i: number): number {
  return fmix32((Math.imul(i, 0x9e3779b9) ^ key) >>> 0);
}

/** A small fast sequential PRNG (sfc32) with uniform and normal draws. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spareNormal: number | null = null;

  constructor(seed: number, stream = 0) {
    this.a = hashKey(seed, stream, 1);
    this.b = hashKey(seed, stream, 2);
    this.c = hashKey(seed, stream, 3);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Standard normal (Box-Muller, both values used). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.uniform() * n);
  }
}

/** Fisher-Yates permutation of 0..n-1 from a seeded stream. */
export function permutation(n: number, seed: number, stream: number): number[] {
  const rng = new Rng(seed, stream);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}
