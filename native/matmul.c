/*
 * Matrix products for the tfjs kernel provider (src/model/provider.ts). The operands live in an
 * ArrayBuffer (the wasm backend's heap), addressed by byte offsets, and the product is written in
 * place: no copies, synchronous as a tfjs kernel must be. The product comes from a system CBLAS
 * loaded at run time (OpenBLAS, BLIS or MKL) or from our own GEMM (gemm.c).
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gemm.h"
#include "napi-util.h"

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 }; /* the CBLAS enum values */
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);

static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;
static sgemm_fn blas_sgemm;            /* set once, under blas_lock; read-only afterwards */
static char blas_description[160];     /* what was loaded, or why nothing was */
static char blas_core[32];             /* OpenBLAS's kernel family (e.g. Haswell); empty for other libraries */

static void set_default_env(const char *name, const char *value) {
  if (!getenv(name)) setenv(name, value, 0);
}

/*
 * OpenBLAS picks its kernels by CPU model number and, on models it does not know (0.3.21 on this
 * kind of VM), falls back to SSE3 kernels five times slower. The instruction set decides instead.
 */
static void choose_openblas_core(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    set_default_env("OPENBLAS_CORETYPE", "SkylakeX");
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    set_default_env("OPENBLAS_CORETYPE", "Haswell");
  }
#endif
}

/* Forces the library to the calling thread: each worker is one thread of a pool sized to the cores. */
static void single_thread(void *lib) {
  void (*set_int)(int) = (void (*)(int))dlsym(lib, "openblas_set_num_threads");
  if (set_int) set_int(1);
  void (*blis_set)(long) = (void (*)(long))dlsym(lib, "bli_thread_set_num_threads");
  if (blis_set) blis_set(1);
  int (*mkl_set)(int) = (int (*)(int))dlsym(lib, "MKL_Set_Num_Threads_Local");
  if (mkl_set) mkl_set(1);
}

static void describe(void *lib, const char *path) {
  const char *(*config)(void) = (const char *(*)(void))dlsym(lib, "openblas_get_config");
  const char *(*core)(void) = (const char *(*)(void))dlsym(lib, "openblas_get_corename");
  const char *(*blis_version)(void) = (const char *(*)(void))dlsym(lib, "bli_info_get_version_str");
  if (config) {
    char name[32] = "", version[32] = "";
    sscanf(config(), "%31s %31s", name, version);
    if (core) snprintf(blas_core, sizeof blas_core, "%s", core());
    snprintf(blas_description, sizeof blas_description, "%s %s (%s)", name, version, core ? blas_core : "?");
  } else if (blis_version) {
    snprintf(blas_description, sizeof blas_description, "BLIS %s", blis_version());
  } else if (dlsym(lib, "MKL_Get_Version_String")) {
    snprintf(blas_description, sizeof blas_description, "MKL");
  } else {
    snprintf(blas_description, sizeof blas_description, "%s", path);
  }
}

/* Loads the first CBLAS that opens (GPT_DDP_BLAS names one); 1 when one is loaded. */
static int load_blas(void) {
  pthread_mutex_lock(&blas_lock);
  if (!blas_sgemm && !blas_description[0]) {
    static const char *candidates[] = { "libopenblas.so.0", "libblis.so.4", "libmkl_rt.so.2", "libmkl_rt.so" };
    const char *chosen = getenv("GPT_DDP_BLAS");
    set_default_env("OPENBLAS_NUM_THREADS", "1");
    set_default_env("BLIS_NUM_THREADS", "1");
    set_default_env("MKL_NUM_THREADS", "1");
    choose_openblas_core();
    const size_t count = chosen && chosen[0] ? 1 : sizeof candidates / sizeof candidates[0];
    for (size_t i = 0; i < count && !blas_sgemm; i++) {
      const char *path = chosen && chosen[0] ? chosen : candidates[i];
      void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (!lib) continue;
      sgemm_fn f = (sgemm_fn)dlsym(lib, "cblas_sgemm");
      if (!f) {
        dlclose(lib);
        continue;
      }
      single_thread(lib);
      describe(lib, path);
      blas_sgemm = f;
    }
    if (!blas_sgemm) {
      snprintf(blas_description, sizeof blas_description, chosen && chosen[0] ? "GPT_DDP_BLAS=%s has no cblas_sgemm or does not load" : "no CBLAS library found (%s)",
               chosen && chosen[0] ? chosen : "apt-get install libopenblas0 adds one");
    }
  }
  const int loaded = blas_sgemm != NULL;
  pthread_mutex_unlock(&blas_lock);
  return loaded;
}

/* loadBlas(): { loaded, description, core } — loads a system CBLAS once per process. */
static napi_value LoadBlas(napi_env env, napi_callback_info info) {
  (void)info;
  const int loaded = load_blas();
  napi_value result, flag, text, core;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_get_boolean(env, loaded, &flag));
  CHECK(napi_create_string_utf8(env, blas_description, NAPI_AUTO_LENGTH, &text));
  CHECK(napi_create_string_utf8(env, blas_core, NAPI_AUTO_LENGTH, &core));
  CHECK(napi_set_named_property(env, result, "loaded", flag));
  CHECK(napi_set_named_property(env, result, "description", text));
  CHECK(napi_set_named_property(env, result, "core", core));
  return result;
}

/* gemmIsa(): the instruction set our own GEMM runs with. */
static napi_value GemmIsa(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value text;
  CHECK(napi_create_string_utf8(env, gemm_isa(), NAPI_AUTO_LENGTH, &text));
  return text;
}

/* A whole number in [0, limit], or -1. */
static double count_arg(napi_env env, napi_value v, double limit) {
  const double x = number(env, v);
  return x >= 0 && x <= limit && x == (double)(int64_t)x ? x : -1;
}

/*
 * matmul(buffer, aOffset, bOffset, cOffset, batch, m, n, k, transposeA, transposeB, aStride, bStride, useBlas):
 * for each of `batch` products, C_i[m x n] = op(A_i) op(B_i), row-major float32 at byte offsets into
 * `buffer`; A_i starts aStride floats after A_{i-1} (0 broadcasts one A to every product), alike B_i;
 * the C_i are contiguous. Every operand must lie inside the buffer.
 */
static napi_value Matmul(napi_env env, napi_callback_info info) {
  napi_value a[13];
  if (!arguments_of(env, info, 13, a, "matmul")) return NULL;
  void *base;
  size_t bytes;
  if (napi_get_arraybuffer_info(env, a[0], &base, &bytes) != napi_ok) {
    napi_throw_type_error(env, NULL, "gpt-ddp native: matmul expects an ArrayBuffer");
    return NULL;
  }
  double v[8];
  for (int i = 0; i < 8; i++) v[i] = count_arg(env, a[i + 1], (double)INT_MAX * 4);
  const double aStride = count_arg(env, a[10], (double)INT_MAX), bStride = count_arg(env, a[11], (double)INT_MAX);
  bool transA = false, transB = false, useBlas = false;
  CHECK(napi_get_value_bool(env, a[8], &transA));
  CHECK(napi_get_value_bool(env, a[9], &transB));
  CHECK(napi_get_value_bool(env, a[12], &useBlas));
  const double batch = v[3], m = v[4], n = v[5], k = v[6];
  int valid = aStride >= 0 && bStride >= 0 && batch >= 1;
  for (int i = 0; i < 7; i++) valid = valid && v[i] >= 0 && (i > 2 || (uint64_t)v[i] % 4 == 0);
  valid = valid && m <= INT_MAX && n <= INT_MAX && k <= INT_MAX;
  /* Extents in bytes, in doubles: exact below 2^53, far beyond any ArrayBuffer. */
  const double aEnd = v[0] + 4 * ((batch - 1) * aStride + m * k), bEnd = v[1] + 4 * ((batch - 1) * bStride + k * n);
  const double cEnd = v[2] + 4 * batch * m * n;
  if (!valid || aEnd > (double)bytes || bEnd > (double)bytes || cEnd > (double)bytes) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: matmul operands do not lie inside the buffer");
    return NULL;
  }
  if (useBlas && !load_blas()) {
    napi_throw_error(env, NULL, "gpt-ddp native: matmul asked for BLAS, but none is loaded");
    return NULL;
  }
  char *heap = base;
  const size_t M = (size_t)m, N = (size_t)n, K = (size_t)k;
  const size_t lda = transA ? M : K, ldb = transB ? K : N;
  for (size_t i = 0; i < (size_t)batch; i++) {
    const float *A = (const float *)(heap + (size_t)v[0]) + i * (size_t)aStride;
    const float *B = (const float *)(heap + (size_t)v[1]) + i * (size_t)bStride;
    float *C = (float *)(heap + (size_t)v[2]) + i * M * N;
    if (useBlas && K > 0) {
      blas_sgemm(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, (int)M, (int)N, (int)K, 1.0f,
                 A, (int)(lda ? lda : 1), B, (int)(ldb ? ldb : 1), 0.0f, C, (int)(N ? N : 1));
    } else if (useBlas) {
      memset(C, 0, M * N * sizeof(float));
    } else {
      gemm_f32(transA, transB, M, N, K, A, lda, B, ldb, C, N);
    }
  }
  return NULL;
}

int export_matmul(napi_env env, napi_value exports) {
  static const exported_function fns[] = { { "matmul", Matmul }, { "loadBlas", LoadBlas }, { "gemmIsa", GemmIsa } };
  return export_functions(env, exports, fns, sizeof fns / sizeof fns[0]);
}
