/* The instruction sets gemm.c and gemm-rows.c compile code for, each behind its target attribute. */
#ifndef GPT_DDP_GEMM_ISA_H
#define GPT_DDP_GEMM_ISA_H

#if defined(__x86_64__) && defined(__GNUC__) /* 32-bit x86 has too few vector registers for these tiles */
#define GEMM_X86 1
#include <immintrin.h>
/* isa_supported() in gemm.c checks exactly these features before either is called. */
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

#endif
