// Command addon is the native Node-API transport of the meshguard core,
// built with -buildmode=c-shared into meshguard.node.
package main

/*
#cgo CFLAGS: -DNAPI_VERSION=8
// The Node-API headers npm installs, so that a plain `go vet ./...` or
// `go test ./...` in go/ builds this package too (test/addon-build.mjs
// passes the same directory in CGO_CFLAGS).
#cgo CFLAGS: -I${SRCDIR}/../../node_modules/node-api-headers/include
#include <stdlib.h>
#include <string.h>
#include "addon.h"
void mg_post(char* msg);
void mg_release_pages(void);
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"os"
	"unsafe"

	"github.com/meshguard/meshguard/go/core"
)

var theCore *core.Core

func post(msg []byte) {
	C.mg_post(C.CString(string(msg)))
}

// mgInit starts the core and its call dispatcher. efd is the non-blocking
// fd addon.c signals when it queues a call into an empty queue (an eventfd
// on Linux, a pipe's read end elsewhere).
//
//export mgInit
func mgInit(efd C.int) {
	// The runtime has started: the pages it read to get here need not stay (pages.c).
	C.mg_release_pages()
	theCore = core.New(post, fdBridge{})
	// A non-blocking fd wrapped by os.NewFile is waited on by Go's netpoller:
	// the dispatcher holds no thread while the queue is empty.
	f := os.NewFile(uintptr(efd), "meshguard-calls")
	go dispatchCalls(f)
}

// dispatchCalls hands queued calls to the core in order, for the life of the process.
func dispatchCalls(f *os.File) {
	var buf [8]byte
	for {
		if _, err := f.Read(buf[:]); err != nil {
			// A read of the signal fails only if the fd is gone: nothing can
			// reach the core any more; say so on every queued call.
			drainCalls(func(id int64, _ string, _ []byte) {
				answerPanic(id, "core: call dispatcher stopped: "+err.Error())
			})
			return
		}
		drainCalls(call)
	}
}

// drainCalls pops queued requests until the queue is empty.
func drainCalls(fn func(id int64, method string, params []byte)) {
	for {
		r := C.mg_pop()
		if r == nil {
			return
		}
		id, m, p := int64(r.id), C.GoString(r.method), C.GoBytes(unsafe.Pointer(r.params), C.int(C.strlen(r.params)))
		C.mg_free_req(r)
		fn(id, m, p)
	}
}

// call starts one request; a panic (none is expected: Call only starts a
// goroutine that recovers its own) answers the call with an error.
func call(id int64, method string, params []byte) {
	defer func() {
		if r := recover(); r != nil {
			answerPanic(id, "core: panic in call: "+fmt.Sprint(r))
		}
	}()
	theCore.Call(id, method, params)
}

func answerPanic(id int64, message string) {
	msg, _ := json.Marshal(message)
	post(fmt.Appendf(nil, `{"id":%d,"error":{"code":%q,"message":%s}}`, id, core.ErrPanic, msg))
}

func main() {}
