/*
 * Checks and times gemm.c (cc -O3 -ffp-contract=off native/gemm.c native/gemm-rows.c native/gemm-bench.c -lm).
 *   gemm-bench sweep          thousands of shapes on every ISA this CPU runs, against a double
 *                             reference, and a product's first row, last row and first
 *                             GEMM_FEW_ROWS rows alone against its whole; one JSON line per
 *                             ISA; exit 1 on a failure or if the avx512 and avx2 output bits
 *                             differ.
 *   gemm-bench speed [isa..]  GFLOP/s (median of repetitions) for the model's shapes.
 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime under -std=c11 too */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gemm.h"

static const char *const ISAS[] = {"avx512", "avx2", "generic"};
#define NISA 3

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return (size_t)(next_u64() % n); }
static float uniform(void) { return (float)((double)(next_u64() >> 40) / (double)(1ull << 23) - 1.0); } /* [-1, 1) */

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
  return p;
}

typedef struct { int ta, tb; size_t M, N, K, lda, ldb, ldc; } shape_t;

/* Leading dimensions: the minimum, or a few floats more half of the time. */
static shape_t make(int ta, int tb, size_t M, size_t N, size_t K) {
  shape_t s = {ta, tb, M, N, K, ta ? M : K, tb ? K : N, N};
  if (next_u64() & 1) s.lda += 1 + below(7);
  if (next_u64() & 1) s.ldb += 1 + below(7);
  if (next_u64() & 1) s.ldc += 1 + below(7);
  return s;
}

static size_t add(shape_t *list, size_t n, shape_t s) { list[n] = s; return n + 1; }

static size_t build_cases(shape_t *list) {
  static const size_t edges[] = {1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16, 17, 18, 27, 28, 29, 31, 32, 33, 47, 48, 49, 63, 64, 65};
  const size_t ne = sizeof edges / sizeof edges[0];
  size_t n = 0;
  for (int t = 0; t < 4; t++) {
    n = add(list, n, make(t & 1, t >> 1, 1 + below(40), 1 + below(40), 0)); /* K = 0 */
    n = add(list, n, make(t & 1, t >> 1, 1, 1, 1));
    for (size_t i = 0; i < 3; i++) /* around the cache blocks */
      for (size_t k = 0; k < 3; k++)
        n = add(list, n, make(t & 1, t >> 1, GEMM_MC - 1 + i, 1 + below(70), GEMM_KC - 1 + k));
    n = add(list, n, make(t & 1, t >> 1, 2 * GEMM_MC + 5, 100, 3 * GEMM_KC + 7)); /* several blocks each way */
    n = add(list, n, make(t & 1, t >> 1, 130, 200, 2 * GEMM_KC + 1));
  }
  n = add(list, n, make(1, 0, 21, GEMM_NC + 33, GEMM_KC + 1)); /* more than one B panel */
  n = add(list, n, make(0, 1, 15, GEMM_NC - 1, 40));
  for (int i = 0; i < 1200; i++) /* sizes around the tiles */
    n = add(list, n, make((int)below(2), (int)below(2), edges[below(ne)], edges[below(ne)], edges[below(ne)]));
  for (int i = 0; i < 2000; i++)
    n = add(list, n, make((int)below(2), (int)below(2), 1 + below(80), 1 + below(80), 1 + below(80)));
  return n;
}

/* A rows x cols matrix with stride ld; the padding holds NaN, so reading it would show. */
static float *matrix(size_t rows, size_t cols, size_t ld) {
  float *m = xmalloc(rows * ld * sizeof(float));
  for (size_t i = 0; i < rows * ld; i++) m[i] = NAN;
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++) m[i * ld + j] = uniform();
  return m;
}

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
#define SENTINEL 0x7fc0abcdu

static int sweep(void) {
  shape_t *cases = xmalloc(4000 * sizeof *cases);
  const size_t ncases = build_cases(cases);
  int ran[NISA] = {0};
  size_t failures[NISA] = {0};
  uint64_t hash[NISA];
  for (int s = 0; s < NISA; s++) { ran[s] = gemm_force_isa(ISAS[s]); hash[s] = 0xcbf29ce484222325ull; }
  for (size_t c = 0; c < ncases; c++) {
    const shape_t s = cases[c];
    const size_t M = s.M, N = s.N, K = s.K;
    float *A = matrix(s.ta ? K : M, s.ta ? M : K, s.lda), *B = matrix(s.tb ? N : K, s.tb ? K : N, s.ldb);
    float *C = xmalloc(M * s.ldc * sizeof(float));
    double *ref = xmalloc(M * N * sizeof(double)), *scale = xmalloc(M * N * sizeof(double));
    for (size_t i = 0; i < M; i++)
      for (size_t j = 0; j < N; j++) {
        double sum = 0, abs = 0;
        for (size_t k = 0; k < K; k++) {
          const double a = s.ta ? A[k * s.lda + i] : A[i * s.lda + k], b = s.tb ? B[j * s.ldb + k] : B[k * s.ldb + j];
          sum += a * b;
          abs += fabs(a * b);
        }
        ref[i * N + j] = sum;
        scale[i * N + j] = abs;
      }
    for (int isa = 0; isa < NISA; isa++) {
      if (!ran[isa]) continue;
      gemm_force_isa(ISAS[isa]);
      const float sentinel = (union { uint32_t u; float f; }){SENTINEL}.f;
      for (size_t i = 0; i < M * s.ldc; i++) C[i] = sentinel;
      gemm_f32(s.ta, s.tb, M, N, K, A, s.lda, B, s.ldb, C, s.ldc);
      size_t bad = 0;
      for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < s.ldc; j++) {
          const float v = C[i * s.ldc + j];
          if (j >= N) { bad += bits(v) != SENTINEL; continue; } /* nothing past N may be written */
          hash[isa] = (hash[isa] ^ bits(v)) * 0x100000001b3ull;
          bad += !(fabs((double)v - ref[i * N + j]) <= 1e-5 * scale[i * N + j] + 1e-30);
        }
      /* A row's bits must not depend on how many rows are multiplied: few rows take another path.
         The first and last rows alone, and the first GEMM_FEW_ROWS together, against the whole. */
      if (M > GEMM_FEW_ROWS && !s.tb && K > 0) {
        float *rows = xmalloc(GEMM_FEW_ROWS * N * sizeof *rows);
        const size_t first[3] = {0, M - 1, 0}, count[3] = {1, 1, GEMM_FEW_ROWS};
        for (int part = 0; part < 3; part++) {
          const size_t i = first[part];
          gemm_f32(s.ta, 0, count[part], N, K, s.ta ? A + i : A + i * s.lda, s.lda, B, s.ldb, rows, N);
          for (size_t r = 0; r < count[part]; r++) bad += memcmp(rows + r * N, C + (i + r) * s.ldc, N * sizeof *rows) != 0;
        }
        free(rows);
      }
      if (strcmp(gemm_isa(), ISAS[isa]) != 0) bad++;
      if (bad && failures[isa] < 10)
        fprintf(stderr, "%s: case %zu (transA=%d transB=%d M=%zu N=%zu K=%zu lda=%zu ldb=%zu ldc=%zu): %zu bad elements or rows\n", ISAS[isa], c,
                s.ta, s.tb, M, N, K, s.lda, s.ldb, s.ldc, bad);
      failures[isa] += bad != 0;
    }
    free(A); free(B); free(C); free(ref); free(scale);
  }
  int status = 0;
  for (int isa = 0; isa < NISA; isa++) {
    if (!ran[isa]) continue;
    printf("{\"isa\":\"%s\",\"cases\":%zu,\"failures\":%zu,\"hash\":\"%016llx\"}\n", ISAS[isa], ncases, failures[isa],
           (unsigned long long)hash[isa]);
    if (failures[isa]) status = 1;
  }
  if (ran[0] && ran[1] && hash[0] != hash[1]) {
    fprintf(stderr, "avx512 and avx2 results differ in their bits\n");
    status = 1;
  }
  free(cases);
  return status;
}

static double now(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct { const char *what; int ta, tb; size_t M, K, N; } bench_t;

static const bench_t BENCH[] = {
  {"fwd x W (qkv/fc)", 0, 0, 512, 768, 3072},  {"fwd x W (proj)", 0, 0, 512, 3072, 768},
  {"fwd x W (attn out)", 0, 0, 512, 768, 768}, {"dW = x^T dy", 1, 0, 768, 512, 3072},
  {"dW = x^T dy", 1, 0, 3072, 512, 768},       {"dx = dy W^T", 0, 1, 512, 3072, 768},
  {"dx = dy W^T", 0, 1, 512, 768, 3072},       {"attn P V", 0, 0, 256, 256, 64},
  {"attn Q K^T", 0, 1, 256, 64, 256},          {"attn dP = dO V^T", 0, 1, 256, 64, 256},
  {"attn dV = P^T dO", 1, 0, 256, 256, 64},    {"attn dQ = dS K", 0, 0, 256, 256, 64},
};

static void speed(const char *isa) {
  if (!gemm_force_isa(isa)) { printf("%s: not supported on this CPU\n", isa); return; }
  /* Wall time, and this thread's CPU time, which leaves out the time other processes had the core. */
  printf("\n%s (single thread; GFLOP/s, median of 9 samples)\n%-20s %4s %5s %5s %5s %7s %7s\n", isa, "product", "op", "M", "K", "N", "wall", "cpu");
  for (size_t b = 0; b < sizeof BENCH / sizeof BENCH[0]; b++) {
    const bench_t s = BENCH[b];
    float *A = matrix(s.M, s.K, s.K), *B = matrix(s.K, s.N, s.N), *C = xmalloc(s.M * s.N * sizeof(float));
    const size_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N; /* same storage, read as the transposed shape */
    const double flops = 2.0 * (double)s.M * (double)s.N * (double)s.K;
    size_t calls = (size_t)(2e8 / flops) + 1; /* about 2 ms or more per sample */
    double wall[9], cpu[9];
    gemm_f32(s.ta, s.tb, s.M, s.N, s.K, A, lda, B, ldb, C, s.N); /* warm up */
    for (int r = 0; r < 9; r++) {
      memset(C, 0xff, s.M * s.N * sizeof(float)); /* fresh output each sample */
      const double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID);
      for (size_t i = 0; i < calls; i++) gemm_f32(s.ta, s.tb, s.M, s.N, s.K, A, lda, B, ldb, C, s.N);
      cpu[r] = flops * (double)calls / (now(CLOCK_THREAD_CPUTIME_ID) - c0) * 1e-9;
      wall[r] = flops * (double)calls / (now(CLOCK_MONOTONIC) - w0) * 1e-9;
    }
    qsort(wall, 9, sizeof wall[0], by_value);
    qsort(cpu, 9, sizeof cpu[0], by_value);
    printf("%-20s %4s %5zu %5zu %5zu %7.1f %7.1f\n", s.what, s.ta ? "A^TB" : s.tb ? "AB^T" : "AB", s.M, s.K, s.N, wall[4], cpu[4]);
    free(A); free(B); free(C);
  }
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "sweep") == 0) return sweep();
  if (argc >= 2 && strcmp(argv[1], "speed") == 0) {
    if (argc > 2)
      for (int i = 2; i < argc; i++) speed(argv[i]);
    else if (gemm_force_isa("avx512") || gemm_force_isa("avx2"))
      for (int i = 0; i < 2; i++) speed(ISAS[i]);
    else
      speed("generic");
    return 0;
  }
  fprintf(stderr, "usage: gemm-bench sweep | speed [avx512|avx2|generic ...]\n");
  return 2;
}
