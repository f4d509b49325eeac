/* Argument reading and export helpers shared by the addon's N-API functions. */
#ifndef GPT_DDP_NAPI_UTIL_H
#define GPT_DDP_NAPI_UTIL_H
#include <math.h>
#include <node_api.h>
#include <stddef.h>
#include <stdio.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "gpt-ddp native: bad arguments"); return NULL; } } while (0)

/* Reads exactly `count` arguments into `out`; throws and returns 0 when the count differs. */
static inline int arguments_of(napi_env env, napi_callback_info info, size_t count, napi_value *out, const char *name) {
  size_t argc = count;
  if (napi_get_cb_info(env, info, &argc, out, NULL, NULL) != napi_ok || argc != count) {
    char message[96];
    snprintf(message, sizeof message, "gpt-ddp native: %s takes %zu arguments", name, count);
    napi_throw_error(env, NULL, message);
    return 0;
  }
  return 1;
}

/* The elements of a typed array argument of the given type (a type error otherwise). */
static inline int typed_array(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, length, data, &buffer, &offset) != napi_ok || type != want) {
    napi_throw_type_error(env, NULL, want == napi_float32_array ? "gpt-ddp native: expected a Float32Array" : "gpt-ddp native: expected a Uint16Array");
    return 0;
  }
  return 1;
}

/* A number argument; NaN (which every caller refuses or propagates visibly) when it is not one. */
static inline double number(napi_env env, napi_value v) {
  double x = 0;
  if (napi_get_value_double(env, v, &x) != napi_ok) return NAN;
  return x;
}

typedef struct { const char *name; napi_callback fn; } exported_function;

static inline int export_functions(napi_env env, napi_value exports, const exported_function *fns, size_t count) {
  for (size_t i = 0; i < count; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok) return 0;
    if (napi_set_named_property(env, exports, fns[i].name, f) != napi_ok) return 0;
  }
  return 1;
}

/* Each source file's table of exports, put together by the module's init in kernels.c. */
int export_matmul(napi_env env, napi_value exports);

#endif
