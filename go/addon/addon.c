// Node-API entry of the meshguard addon. The C side only moves strings:
// requests are queued here and picked up by a Go goroutine (the JS thread
// never enters Go), responses and events come back through one thread-safe
// function so they always reach JS on the JS thread.
#include <stdlib.h>
#include <stdint.h>
#include <pthread.h>
#include <unistd.h>
#include <fcntl.h>
#if defined(__linux__) && !defined(MG_SIGNAL_PIPE)
#include <sys/eventfd.h>
#define MG_EVENTFD 1
#endif
#include <node_api.h>
#include "addon.h"
#include "_cgo_export.h"

static napi_threadsafe_function g_tsfn = NULL;

// The request queue. js_call appends under q_mu and, when the queue was
// empty, signals the Go dispatcher (mgInit), which waits on the signal fd
// through Go's netpoller and drains the queue with mg_pop. The signal is an
// eventfd on Linux and a non-blocking pipe elsewhere (macOS): the dispatcher
// reads up to 8 bytes either way, and a spare byte only costs it one empty
// drain. Entering Go from
// the JS thread instead (a cgo callback) made that thread wait for a Go P
// whenever the Go scheduler was busy: ~55 us of JS-thread time a call,
// measured (docs/core.md, "Data path performance").
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static mg_req* q_head = NULL;
static mg_req* q_tail = NULL;
static int q_wfd = -1; // the signal's write end (the eventfd itself on Linux)

// mg_signal_open makes the signal fd pair; *rfd is the end Go reads.
static int mg_signal_open(int* rfd) {
#ifdef MG_EVENTFD
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return -1;
  *rfd = q_wfd = fd;
#else
  int p[2];
  if (pipe(p) != 0) return -1;
  for (int i = 0; i < 2; i++) {
    fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
    fcntl(p[i], F_SETFD, FD_CLOEXEC);
  }
  *rfd = p[0];
  q_wfd = p[1];
#endif
  return 0;
}

// mg_pop takes the oldest queued request, or NULL. The caller frees it with mg_free_req.
mg_req* mg_pop(void) {
  pthread_mutex_lock(&q_mu);
  mg_req* r = q_head;
  if (r != NULL) {
    q_head = r->next;
    if (q_head == NULL) q_tail = NULL;
  }
  pthread_mutex_unlock(&q_mu);
  return r;
}

void mg_free_req(mg_req* r) {
  free(r->method);
  free(r->params);
  free(r);
}

static void mg_push(mg_req* r) {
  r->next = NULL;
  pthread_mutex_lock(&q_mu);
  int was_empty = q_head == NULL;
  if (q_tail != NULL) q_tail->next = r;
  else q_head = r;
  q_tail = r;
  pthread_mutex_unlock(&q_mu);
  if (was_empty) {
    // It fails only with EAGAIN (the eventfd counter about to overflow, the
    // pipe full): a signal is pending then, so the dispatcher wakes anyway.
#ifdef MG_EVENTFD
    uint64_t one = 1;
#else
    uint8_t one = 1;
#endif
    ssize_t n = write(q_wfd, &one, sizeof one);
    (void)n;
  }
}

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
  int rfd = -1;
  if (mg_signal_open(&rfd) != 0) {
    return throw_error(env, "MESHGUARD_INTERNAL", "the meshguard addon could not create its call signal (eventfd or pipe failed: out of file descriptors?)");
  }
  mgInit(rfd);
  return NULL;
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
  mg_req* r = (mg_req*)malloc(sizeof(mg_req));
  if (r == NULL) {
    free(method);
    free(params);
    return throw_error(env, "MESHGUARD_INTERNAL", "call: out of memory");
  }
  r->id = (long long)id;
  r->method = method;
  r->params = params;
  mg_push(r);
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
