/*
 * gpt-ddp's single-precision matrix product (our own code): packed panels, register-blocked
 * micro-kernels for AVX-512 and AVX2 picked at run time, and a portable C path; products of a few
 * rows stream B instead (gemm-rows.c). Every element of C is one fused multiply-add chain over
 * k = 0..K-1 in increasing order, so all these paths give the same bits for the same inputs.
 */
#ifndef GPT_DDP_GEMM_H
#define GPT_DDP_GEMM_H
#include <stddef.h>

/* Cache blocks (floats): a KC x NC panel of B, an MC x KC block of A. KC = 256 keeps a 32-column B
   sliver (32 KB) in a 48 KB L1; the B panel (768 KB) and A block (168 KB) share a 1 MB L2. MC is a
   multiple of every kernel's row count (14, 6, 4), NC of every column count (32, 16). The results'
   bits do not depend on these; gemm-bench tests sizes around them. */
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
#ifndef GEMM_MC
#define GEMM_MC 168
#endif
#ifndef GEMM_NC
#define GEMM_NC 768
#endif

/* Up to this many rows of op(A), with B not transposed, skip packing (see few_rows in gemm-rows.c). */
#ifndef GEMM_FEW_ROWS
#define GEMM_FEW_ROWS 4
#endif

/* C[M x N] = op(A) * op(B), row-major; op(X) = X^T when transX != 0. lda/ldb/ldc are row strides in floats.
   A is M x K (or K x M when transA), B is K x N (or N x K when transB). C is overwritten (beta = 0). K == 0 writes zeros. */
void gemm_f32(int transA, int transB, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc);
/* The instruction set the kernel uses: "avx512", "avx2" or "generic". */
const char *gemm_isa(void);
/* For tests: force "avx512" | "avx2" | "generic"; returns 0 (and changes nothing) if this CPU cannot run it. */
int gemm_force_isa(const char *name);

#endif
