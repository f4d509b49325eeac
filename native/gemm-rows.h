/* gemm.c's few-rows path (gemm-rows.c), one entry per instruction set; C is overwritten. */
#ifndef GPT_DDP_GEMM_ROWS_H
#define GPT_DDP_GEMM_ROWS_H
#include "gemm-isa.h"
#include <stddef.h>

typedef void (*rows_fn)(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc);

#ifdef GEMM_X86
void gemm_rows_avx512(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc);
void gemm_rows_avx2(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc);
#endif
void gemm_rows_generic(int transA, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb, float *C, size_t ldc);

#endif
