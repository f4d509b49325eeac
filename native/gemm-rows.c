/*
 * The few-rows path of gemm.c: a few rows of op(A) times a row-major B (a generated token's
 * projections and head, the bias gradients' column sums). B is read once, a row of k at a time,
 * into the C rows, which stay in cache; the packed path would copy all of B and compute a whole
 * MR-row tile for each real row. Each element gets the same chain as there (+0, then one FMA per k
 * in increasing order), so the bits are the packed path's. Build with -ffp-contract=off.
 */
#include "gemm-rows.h"
#include <math.h>
#include <string.h>

/* c[0..n) = fma(a, b[j], c[j]) for every j: one step of each element's chain. */
typedef void (*axpy_fn)(size_t n, float a, const float *b, float *c);

static void axpy_generic(size_t n, float a, const float *b, float *c) {
  for (size_t j = 0; j < n; j++) c[j] = fmaf(a, b[j], c[j]);
}

#ifdef GEMM_X86
TARGET_AVX512 static void axpy_avx512(size_t n, float a, const float *b, float *c) {
  const __m512 av = _mm512_set1_ps(a);
  size_t j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(c + j, _mm512_fmadd_ps(av, _mm512_loadu_ps(b + j), _mm512_loadu_ps(c + j)));
  if (j < n) {
    const __mmask16 tail = (__mmask16)((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(c + j, tail, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(tail, b + j), _mm512_maskz_loadu_ps(tail, c + j)));
  }
}

TARGET_AVX2 static void axpy_avx2(size_t n, float a, const float *b, float *c) {
  const __m256 av = _mm256_set1_ps(a);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(c + j, _mm256_fmadd_ps(av, _mm256_loadu_ps(b + j), _mm256_loadu_ps(c + j)));
  for (; j < n; j++) c[j] = fmaf(a, b[j], c[j]);
}
#endif

static void few_rows(axpy_fn axpy, int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc) {
  for (size_t i = 0; i < M; i++) memset(C + i * ldc, 0, N * sizeof *C);
  for (size_t k = 0; k < K; k++)
    for (size_t i = 0; i < M; i++) axpy(N, transA ? A[k * lda + i] : A[i * lda + k], B + k * ldb, C + i * ldc);
}

#ifdef GEMM_X86
void gemm_rows_avx512(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc) {
  few_rows(axpy_avx512, transA, M, N, K, A, lda, B, ldb, C, ldc);
}

void gemm_rows_avx2(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc) {
  few_rows(axpy_avx2, transA, M, N, K, A, lda, B, ldb, C, ldc);
}
#endif

void gemm_rows_generic(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc) {
  few_rows(axpy_generic, transA, M, N, K, A, lda, B, ldb, C, ldc);
}
