// Node-API entry of the meshguard addon. The C side only moves strings:
// requests wait in a queue a Go goroutine drains (js_call), responses and events come back through one
// thread-safe function so they always reach JS on the JS thread.
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <node_api.h>
#include "_cgo_export.h"
#include "addon.h"

static napi_threadsafe_function g_tsfn = NULL;

static void call_js(napi_env env, napi_value cb, void* ctx, void* data) {
  char* msg = (char*)data;
  (void)ctx;
  if (env != NULL && cb != NULL) {
    napi_value str, undef;
    if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &str) == napi_ok &&
        napi_get_undefined(env, &undef) == napi_ok) {
      // The JS handler catches its own exceptions; a pending one here would
      // surface as an uncaught exception, which is the right place for it.
      napi_call_function(env, undef, cb, 1, &str, NULL);
    }
  }
  free(msg);
}

// mg_post hands one message (malloc'd, NUL-terminated) to JS. Any thread.
void mg_post(char* msg) {
  if (g_tsfn == NULL || napi_call_threadsafe_function(g_tsfn, msg, napi_tsfn_nonblocking) != napi_ok) {
    free(msg);
  }
}

static napi_value throw_error(napi_env env, const char* code, const char* msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static char* get_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char* buf = (char*)malloc(len + 1);
  if (buf == NULL) return NULL;
  if (napi_get_value_string_utf8(env, v, buf, len + 1, &len) != napi_ok) {
    free(buf);
    return NULL;
  }
  return buf;
}

// init(onMessage): registers the message handler. Once per process: Go
// allows one runtime per process, so the addon serves every node from it.
static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) {
    return throw_error(env, "MESHGUARD_INVALID_OPTIONS", "init(onMessage): onMessage must be a function");
  }
  if (g_tsfn != NULL) {
    return throw_error(env, "MESHGUARD_BACKEND_UNAVAILABLE", "the meshguard addon is already initialised in this process (one JS thread may own it)");
  }
  napi_value name;
  napi_create_string_utf8(env, "meshguard", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &g_tsfn) != napi_ok) {
    return throw_error(env, "MESHGUARD_INTERNAL", "napi_create_threadsafe_function failed");
  }
  // Idle by default: the JS side refs it while calls are in flight or nodes are open.
  napi_unref_threadsafe_function(env, g_tsfn);
  mgInit();
  return NULL;
}

// Calls from JS wait in a queue that one Go goroutine drains (mg_next_call).
// The JS thread never enters the Go runtime for a call: a C-to-Go call needs
// a Go scheduler slot (P), and while every P runs goroutines (a hundred
// nodes coming up) the JS thread waited for one — up to 200 ms measured,
// an event-loop stall (docs/core.md, "Many nodes in one process"). Queueing
// costs the JS thread a mutex and a condition signal.
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static mg_call* g_head = NULL;
static mg_call* g_tail = NULL;

// mg_next_call blocks until a call is queued and returns it; the caller
// frees it with mg_free_call. Called only by the Go dispatcher goroutine (a
// blocking cgo call holds an OS thread, not a Go scheduler slot).
mg_call* mg_next_call(void) {
  pthread_mutex_lock(&g_mu);
  while (g_head == NULL) pthread_cond_wait(&g_cv, &g_mu);
  mg_call* c = g_head;
  g_head = c->next;
  if (g_head == NULL) g_tail = NULL;
  pthread_mutex_unlock(&g_mu);
  return c;
}

void mg_free_call(mg_call* c) {
  free(c->method);
  free(c->params);
  free(c);
}

// call(id, method, paramsJSON): returns at once; the answer comes as a message.
static napi_value js_call(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t id = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int64(env, argv[0], &id) != napi_ok) {
    return throw_error(env, "MESHGUARD_INVALID_OPTIONS", "call(id, method, params): bad arguments");
  }
  char* method = get_string(env, argv[1]);
  char* params = get_string(env, argv[2]);
  if (method == NULL || params == NULL) {
    free(method);
    free(params);
    return throw_error(env, "MESHGUARD_INVALID_OPTIONS", "call(id, method, params): method and params must be strings");
  }
  mg_call* c = (mg_call*)malloc(sizeof(mg_call));
  if (c == NULL) {
    free(method);
    free(params);
    return throw_error(env, "MESHGUARD_INTERNAL", "call: out of memory");
  }
  c->id = (long long)id;
  c->method = method;
  c->params = params;
  c->next = NULL;
  pthread_mutex_lock(&g_mu);
  if (g_tail != NULL) g_tail->next = c;
  else g_head = c;
  g_tail = c;
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
  return NULL;
}

static napi_value js_ref(napi_env env, napi_callback_info info) {
  (void)info;
  if (g_tsfn != NULL) napi_ref_threadsafe_function(env, g_tsfn);
  return NULL;
}

static napi_value js_unref(napi_env env, napi_callback_info info) {
  (void)info;
  if (g_tsfn != NULL) napi_unref_threadsafe_function(env, g_tsfn);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"init", NULL, js_init, NULL, NULL, NULL, napi_default, NULL},
    {"call", NULL, js_call, NULL, NULL, NULL, napi_default, NULL},
    {"ref", NULL, js_ref, NULL, NULL, NULL, napi_default, NULL},
    {"unref", NULL, js_unref, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}
