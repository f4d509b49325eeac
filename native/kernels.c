/*
 * gpt-ddp's native kernels for the optimizer, the gradient reduction and the bf16 wire format, and
 * the addon's entry point (matmul.c adds the matrix products). Every result is bit-identical to the
 * JavaScript versions in src/math (same IEEE double and float operations in the same order;
 * built with -ffp-contract=off so no multiply-add is fused), so nodes with and without this
 * addon mirror each other exactly.
 */
#include <stdint.h>
#include <string.h>
#include "napi-util.h"

static inline int float_array(napi_env env, napi_value v, float **data, size_t *length) {
  return typed_array(env, v, napi_float32_array, (void **)data, length);
}

static inline int u16_array(napi_env env, napi_value v, uint16_t **data, size_t *length) {
  return typed_array(env, v, napi_uint16_array, (void **)data, length);
}

/* Built without -march=native so the addon runs on any x86-64; the hot loops get clones for wider
   vector units, picked at load time. -ffp-contract=off keeps every clone's bits the same. */
#if defined(__x86_64__) && defined(__GNUC__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* The AdamW loop (restrict: the four arrays never overlap, so it vectorises). */
VECTOR_CLONES static void adamw_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t start, size_t end,
                        double decay, double stepSize, double bc2Sqrt, double oneMinusB1, double beta2, double oneMinusB2, double eps, double gradScale) {
  for (size_t i = start; i < end; i++) {
    const double gi = (double)g[i] * gradScale;
    const double mi = (double)m[i] + oneMinusB1 * (gi - (double)m[i]);
    const double vi = beta2 * (double)v[i] + oneMinusB2 * gi * gi;
    m[i] = (float)mi;
    v[i] = (float)vi;
    p[i] = (float)((double)p[i] * decay - (stepSize * mi) / (sqrt(vi) / bc2Sqrt + eps));
  }
}

/* adamw(params, grad, m, v, start, end, decay, stepSize, bc2Sqrt, oneMinusB1, beta2, oneMinusB2, eps, gradScale) */
static napi_value AdamW(napi_env env, napi_callback_info info) {
  napi_value a[14];
  if (!arguments_of(env, info, 14, a, "adamw")) return NULL;
  float *p, *g, *m, *v;
  size_t np, ng, nm, nv;
  if (!float_array(env, a[0], &p, &np) || !float_array(env, a[1], &g, &ng) || !float_array(env, a[2], &m, &nm) || !float_array(env, a[3], &v, &nv)) return NULL;
  const double start = number(env, a[4]), end = number(env, a[5]);
  if (!(start >= 0 && start <= end && end <= (double)np && np == ng && np == nm && np == nv)) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: adamw range or lengths do not match");
    return NULL;
  }
  adamw_range(p, g, m, v, (size_t)start, (size_t)end, number(env, a[6]), number(env, a[7]), number(env, a[8]), number(env, a[9]),
              number(env, a[10]), number(env, a[11]), number(env, a[12]), number(env, a[13]));
  return NULL;
}

VECTOR_CLONES static void add_range(float *restrict t, const float *restrict s, size_t n) {
  for (size_t i = 0; i < n; i++) t[i] += s[i];
}

/* addInto(target, source): target[i] += source[i] in float32. */
static napi_value AddInto(napi_env env, napi_callback_info info) {
  napi_value a[2];
  if (!arguments_of(env, info, 2, a, "addInto")) return NULL;
  float *t, *s;
  size_t nt, ns;
  if (!float_array(env, a[0], &t, &nt) || !float_array(env, a[1], &s, &ns)) return NULL;
  if (nt != ns) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: addInto lengths differ");
    return NULL;
  }
  add_range(t, s, nt);
  return NULL;
}

VECTOR_CLONES static void add_to_range(float *restrict o, const float *restrict a, const float *restrict b, size_t n) {
  for (size_t i = 0; i < n; i++) o[i] = a[i] + b[i];
}

static inline int overlap(const float *x, const float *y, size_t n) {
  return x < y + n && y < x + n;
}

/* addTo(out, a, b): out[i] = a[i] + b[i] in float32; out may not overlap a or b (restrict). */
static napi_value AddTo(napi_env env, napi_callback_info info) {
  napi_value v[3];
  if (!arguments_of(env, info, 3, v, "addTo")) return NULL;
  float *o, *a, *b;
  size_t no, na, nb;
  if (!float_array(env, v[0], &o, &no) || !float_array(env, v[1], &a, &na) || !float_array(env, v[2], &b, &nb)) return NULL;
  if (no != na || no != nb) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: addTo lengths differ");
    return NULL;
  }
  if (no > 0 && (overlap(o, a, no) || overlap(o, b, no))) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: addTo output overlaps an operand");
    return NULL;
  }
  add_to_range(o, a, b, no);
  return NULL;
}

/* firstNonFinite(values): the index of the first NaN or infinity, or -1. */
static napi_value FirstNonFinite(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (!arguments_of(env, info, 1, a, "firstNonFinite")) return NULL;
  float *x;
  size_t n;
  if (!float_array(env, a[0], &x, &n)) return NULL;
  double found = -1;
  const size_t block = 4096;
  for (size_t b = 0; b < n && found < 0; b += block) {
    const size_t e = b + block < n ? b + block : n;
    uint32_t bad = 0;
    for (size_t i = b; i < e; i++) {
      uint32_t bits;
      memcpy(&bits, &x[i], 4);
      bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (bad) {
      for (size_t i = b; i < e; i++) {
        if (!isfinite(x[i])) {
          found = (double)i;
          break;
        }
      }
    }
  }
  napi_value r;
  CHECK(napi_create_double(env, found, &r));
  return r;
}

/* The bf16 bits of float32 bits x: round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t bf16_bits(uint32_t x) {
  return (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40u) : (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* toBf16(values: Float32Array, out: Uint16Array) */
static napi_value ToBf16(napi_env env, napi_callback_info info) {
  napi_value a[2];
  if (!arguments_of(env, info, 2, a, "toBf16")) return NULL;
  float *x;
  uint16_t *out;
  size_t n, no;
  if (!float_array(env, a[0], &x, &n) || !u16_array(env, a[1], &out, &no)) return NULL;
  if (n != no) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: toBf16 lengths differ");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &x[i], 4);
    out[i] = bf16_bits(bits);
  }
  return NULL;
}

/* fromBf16(values: Uint16Array, out: Float32Array) */
static napi_value FromBf16(napi_env env, napi_callback_info info) {
  napi_value a[2];
  if (!arguments_of(env, info, 2, a, "fromBf16")) return NULL;
  uint16_t *h;
  float *out;
  size_t n, no;
  if (!u16_array(env, a[0], &h, &n) || !float_array(env, a[1], &out, &no)) return NULL;
  if (n != no) {
    napi_throw_range_error(env, NULL, "gpt-ddp native: fromBf16 lengths differ");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    const uint32_t bits = (uint32_t)h[i] << 16;
    memcpy(&out[i], &bits, 4);
  }
  return NULL;
}

/* roundToBf16(values: Float32Array): each value rounded to bfloat16, in place. */
static napi_value RoundToBf16(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (!arguments_of(env, info, 1, a, "roundToBf16")) return NULL;
  float *x;
  size_t n;
  if (!float_array(env, a[0], &x, &n)) return NULL;
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &x[i], 4);
    bits = (uint32_t)bf16_bits(bits) << 16;
    memcpy(&x[i], &bits, 4);
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  static const exported_function fns[] = {
    { "adamw", AdamW }, { "addInto", AddInto }, { "addTo", AddTo }, { "firstNonFinite", FirstNonFinite },
    { "toBf16", ToBf16 }, { "fromBf16", FromBf16 }, { "roundToBf16", RoundToBf16 },
  };
  if (!export_functions(env, exports, fns, sizeof fns / sizeof fns[0]) || !export_matmul(env, exports)) return NULL;
  return exports;
}
