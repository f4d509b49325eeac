/*
 * Single-precision GEMM (see gemm.h). Loop order: NC columns of B -> KC rows of k (pack B) ->
 * MC rows of A (pack A) -> NR-wide B slivers (kept in L1) -> MR-tall A slivers (streamed from L2).
 * A micro-kernel keeps an MR x NR tile of C in registers; between k-blocks it reloads the tile from C
 * and continues the same fused chain, so the bits depend neither on the ISA nor on the block sizes.
 * Products of at most GEMM_FEW_ROWS rows with B not transposed skip the packing (gemm-rows.c).
 * Build with -ffp-contract=off: the only fused operations are the explicit FMAs.
 */
#include "gemm.h"
#include "gemm-rows.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MR_MAX 14
#define NR_MAX 32

static inline size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
static inline size_t round_up(size_t a, size_t b) { return (a + b - 1) / b * b; }

/* Packs op(A)[i0.., k0..] (mc x kc) as mr-row slivers, each kc columns of mr contiguous floats; rows
   past mc are zero so edge tiles need no special kernel. Inlined into each ISA's wrapper with a
   constant mr, so the copies unroll and vectorise for that ISA. */
static inline __attribute__((always_inline)) void pack_A_body(int trans, const float *A, size_t lda, size_t i0, size_t k0, size_t mc,
                                                              size_t kc, size_t mr, float *restrict dst) {
  for (size_t ir = 0; ir < mc; ir += mr, dst += mr * kc) {
    const size_t m = min_size(mr, mc - ir);
    if (trans) { /* op(A)[i][k] = A[k][i]: each k gives m contiguous floats */
      for (size_t k = 0; k < kc; k++) {
        const float *src = A + (k0 + k) * lda + i0 + ir;
        float *d = dst + k * mr;
        if (m == mr)
          for (size_t i = 0; i < mr; i++) d[i] = src[i];
        else
          for (size_t i = 0; i < mr; i++) d[i] = i < m ? src[i] : 0.0f;
      }
    } else if (m == mr) { /* mr rows read side by side, the sliver written in order */
      const float *src = A + (i0 + ir) * lda + k0;
      for (size_t k = 0; k < kc; k++)
        for (size_t i = 0; i < mr; i++) dst[k * mr + i] = src[i * lda + k];
    } else {
      for (size_t k = 0; k < kc; k++)
        for (size_t i = 0; i < mr; i++) dst[k * mr + i] = i < m ? A[(i0 + ir + i) * lda + k0 + k] : 0.0f;
    }
  }
}

/* Packs op(B)[k0.., j0..] (kc x nc) as nr-column slivers, each kc rows of nr contiguous floats, with
   zero columns past nc. */
static inline __attribute__((always_inline)) void pack_B_body(int trans, const float *B, size_t ldb, size_t k0, size_t j0, size_t kc,
                                                              size_t nc, size_t nr, float *restrict dst) {
  for (size_t jr = 0; jr < nc; jr += nr, dst += nr * kc) {
    const size_t n = min_size(nr, nc - jr);
    if (trans) { /* op(B)[k][j] = B[j][k]: nr rows of B read side by side */
      const float *src = B + (j0 + jr) * ldb + k0;
      if (n == nr)
        for (size_t j = 0; j < nr; j++)
          for (size_t k = 0; k < kc; k++) dst[k * nr + j] = src[j * ldb + k];
      else
        for (size_t k = 0; k < kc; k++)
          for (size_t j = 0; j < nr; j++) dst[k * nr + j] = j < n ? src[j * ldb + k] : 0.0f;
    } else {
      for (size_t k = 0; k < kc; k++) {
        const float *src = B + (k0 + k) * ldb + j0 + jr;
        float *d = dst + k * nr;
        if (n == nr)
          for (size_t j = 0; j < nr; j++) d[j] = src[j];
        else
          for (size_t j = 0; j < nr; j++) d[j] = j < n ? src[j] : 0.0f;
      }
    }
  }
}

typedef void (*pack_fn)(int trans, const float *X, size_t ldx, size_t r0, size_t c0, size_t rows, size_t cols, float *dst);
#define PACKERS(suffix, target, MR, NR)                                                                                 \
  target static void pack_A_##suffix(int t, const float *X, size_t ld, size_t i0, size_t k0, size_t mc, size_t kc, float *d) { \
    pack_A_body(t, X, ld, i0, k0, mc, kc, MR, d);                                                                        \
  }                                                                                                                      \
  target static void pack_B_##suffix(int t, const float *X, size_t ld, size_t k0, size_t j0, size_t kc, size_t nc, float *d) { \
    pack_B_body(t, X, ld, k0, j0, kc, nc, NR, d);                                                                        \
  }

/* Multiplies an MR x kc packed A sliver by a kc x NR packed B sliver into a full MR x NR tile of C.
   load = 0 starts the chain from +0, load = 1 continues it from the values in C. */
typedef void (*kernel_fn)(size_t kc, const float *A, const float *B, float *C, size_t ldc, int load);

typedef struct {
  const char *name;
  size_t mr, nr;
  kernel_fn kernel;
  pack_fn pack_A, pack_B;
  rows_fn few_rows; /* see gemm-rows.c */
} isa_t;

/* Portable kernel: fmaf rounds exactly like the vector FMAs, so this path matches them bit for bit. */
static void kernel_generic(size_t kc, const float *restrict A, const float *restrict B, float *restrict C, size_t ldc, int load) {
  float acc[4][16];
  for (size_t i = 0; i < 4; i++)
    for (size_t j = 0; j < 16; j++) acc[i][j] = load ? C[i * ldc + j] : 0.0f;
  for (size_t k = 0; k < kc; k++, A += 4, B += 16)
    for (size_t i = 0; i < 4; i++)
      for (size_t j = 0; j < 16; j++) acc[i][j] = fmaf(A[i], B[j], acc[i][j]);
  for (size_t i = 0; i < 4; i++) memcpy(C + i * ldc, acc[i], sizeof acc[i]);
}

#ifdef GEMM_X86
/* 14 x 32: 28 zmm accumulators + 2 B vectors + 1 broadcast = 31 of 32 registers; 28 independent
   FMAs per k hide the FMA latency on two pipes. */
TARGET_AVX512 static void kernel_avx512(size_t kc, const float *restrict A, const float *restrict B, float *restrict C, size_t ldc, int load) {
  __m512 c[14][2];
  if (load) {
#pragma GCC unroll 14
    for (int i = 0; i < 14; i++) {
      c[i][0] = _mm512_loadu_ps(C + i * ldc);
      c[i][1] = _mm512_loadu_ps(C + i * ldc + 16);
    }
  } else {
#pragma GCC unroll 14
    for (int i = 0; i < 14; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
  }
  for (size_t k = 0; k < kc; k++, A += 14, B += 32) {
    const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
#pragma GCC unroll 14
    for (int i = 0; i < 14; i++) {
      const __m512 a = _mm512_set1_ps(A[i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
  }
#pragma GCC unroll 14
  for (int i = 0; i < 14; i++) {
    _mm512_storeu_ps(C + i * ldc, c[i][0]);
    _mm512_storeu_ps(C + i * ldc + 16, c[i][1]);
  }
}

/* 6 x 16: 12 ymm accumulators + 2 B vectors + 1 broadcast = 15 of 16 registers. */
TARGET_AVX2 static void kernel_avx2(size_t kc, const float *restrict A, const float *restrict B, float *restrict C, size_t ldc, int load) {
  __m256 c[6][2];
  if (load) {
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
      c[i][0] = _mm256_loadu_ps(C + i * ldc);
      c[i][1] = _mm256_loadu_ps(C + i * ldc + 8);
    }
  } else {
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
  }
  for (size_t k = 0; k < kc; k++, A += 6, B += 16) {
    const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
      const __m256 a = _mm256_broadcast_ss(A + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < 6; i++) {
    _mm256_storeu_ps(C + i * ldc, c[i][0]);
    _mm256_storeu_ps(C + i * ldc + 8, c[i][1]);
  }
}
#endif

PACKERS(generic, , 4, 16)
#ifdef GEMM_X86
PACKERS(avx512, TARGET_AVX512, 14, 32)
PACKERS(avx2, TARGET_AVX2, 6, 16)
#endif

enum { ISA_AVX512, ISA_AVX2, ISA_GENERIC, ISA_COUNT };

static const isa_t ISAS[ISA_COUNT] = {
#ifdef GEMM_X86
  {"avx512", 14, 32, kernel_avx512, pack_A_avx512, pack_B_avx512, gemm_rows_avx512},
  {"avx2", 6, 16, kernel_avx2, pack_A_avx2, pack_B_avx2, gemm_rows_avx2},
#else
  {"avx512", 0, 0, NULL, NULL, NULL, NULL},
  {"avx2", 0, 0, NULL, NULL, NULL, NULL},
#endif
  {"generic", 4, 16, kernel_generic, pack_A_generic, pack_B_generic, gemm_rows_generic},
};

static int isa_supported(int isa) {
#ifdef GEMM_X86
  __builtin_cpu_init();
  if (isa == ISA_AVX512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
  if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == ISA_GENERIC;
}

/* The chosen ISA (-1: not chosen yet). Atomic so concurrent first calls do not race; every thread
   would store the same value anyway. */
static int chosen = -1;

static const isa_t *current_isa(void) {
  int isa = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
  if (isa < 0) {
    isa = isa_supported(ISA_AVX512) ? ISA_AVX512 : isa_supported(ISA_AVX2) ? ISA_AVX2 : ISA_GENERIC;
    __atomic_store_n(&chosen, isa, __ATOMIC_RELEASE);
  }
  return &ISAS[isa];
}

const char *gemm_isa(void) { return current_isa()->name; }

int gemm_force_isa(const char *name) {
  for (int isa = 0; isa < ISA_COUNT; isa++)
    if (strcmp(name, ISAS[isa].name) == 0 && isa_supported(isa)) {
      __atomic_store_n(&chosen, isa, __ATOMIC_RELEASE);
      return 1;
    }
  return 0;
}

/* Without packing buffers (malloc failed): the same chain per element, so the same bits. */
static void gemm_unpacked(int transA, int transB, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc) {
  for (size_t i = 0; i < M; i++)
    for (size_t j = 0; j < N; j++) {
      float acc = 0.0f;
      for (size_t k = 0; k < K; k++)
        acc = fmaf(transA ? A[k * lda + i] : A[i * lda + k], transB ? B[j * ldb + k] : B[k * ldb + j], acc);
      C[i * ldc + j] = acc;
    }
}

void gemm_f32(int transA, int transB, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (size_t i = 0; i < M; i++) memset(C + i * ldc, 0, N * sizeof *C);
    return;
  }
  const isa_t *isa = current_isa();
  if (M <= GEMM_FEW_ROWS && !transB) {
    isa->few_rows(transA, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  const size_t mr = isa->mr, nr = isa->nr;
  const size_t kcMax = min_size(GEMM_KC, K);
  const size_t ncMax = round_up(min_size(GEMM_NC, N), nr), mcMax = round_up(min_size(GEMM_MC, M), mr);
  /* Per-call buffers (thread safe); B's panel first so both start on a 64-byte boundary. */
  const size_t bFloats = round_up(kcMax * ncMax, 16), aFloats = mcMax * kcMax;
  void *raw = malloc((bFloats + aFloats) * sizeof(float) + 64);
  if (!raw) {
    gemm_unpacked(transA, transB, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  float *Bp = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
  float *Ap = Bp + bFloats;
  float edge[MR_MAX * NR_MAX]; /* partial tiles of C go through here */
  memset(edge, 0, sizeof edge);  /* its unused rows and columns are computed too: keep them finite */

  for (size_t jc = 0; jc < N; jc += GEMM_NC) {
    const size_t nc = min_size(GEMM_NC, N - jc);
    for (size_t pc = 0; pc < K; pc += GEMM_KC) {
      const size_t kc = min_size(GEMM_KC, K - pc);
      const int load = pc > 0;
      isa->pack_B(transB, B, ldb, pc, jc, kc, nc, Bp);
      for (size_t ic = 0; ic < M; ic += GEMM_MC) {
        const size_t mc = min_size(GEMM_MC, M - ic);
        isa->pack_A(transA, A, lda, ic, pc, mc, kc, Ap);
        for (size_t jr = 0; jr < nc; jr += nr) {
          const size_t n = min_size(nr, nc - jr);
          const float *b = Bp + jr * kc;
          for (size_t ir = 0; ir < mc; ir += mr) {
            const size_t m = min_size(mr, mc - ir);
            const float *a = Ap + ir * kc;
            float *c = C + (ic + ir) * ldc + jc + jr;
            if (m == mr && n == nr) {
              isa->kernel(kc, a, b, c, ldc, load);
              continue;
            }
            if (load)
              for (size_t i = 0; i < m; i++) memcpy(edge + i * nr, c + i * ldc, n * sizeof *c);
            isa->kernel(kc, a, b, edge, nr, load);
            for (size_t i = 0; i < m; i++) memcpy(c + i * ldc, edge + i * nr, n * sizeof *c);
          }
        }
      }
    }
  }
  free(raw);
}
