// Command addon is the native Node-API transport of the meshguard core,
// built with -buildmode=c-shared into meshguard.node.
package main

/*
#cgo CFLAGS: -DNAPI_VERSION=8
#include <stdlib.h>
#include "addon.h"
void mg_post(char* msg);
*/
import "C"

import (
	"encoding/json"
	"fmt"

	"github.com/meshguard/meshguard/go/core"
)

var theCore *core.Core

func post(msg []byte) {
	C.mg_post(C.CString(string(msg)))
}

//export mgInit
func mgInit() {
	theCore = core.New(post, fdBridge{})
	go serveCalls()
}

// serveCalls takes the calls JS queued (js_call in addon.c) and hands each
// to the core, which answers on a goroutine of its own. It waits inside C,
// so it holds an OS thread but no Go scheduler slot while idle.
func serveCalls() {
	for {
		c := C.mg_next_call()
		id, m, p := int64(c.id), C.GoString(c.method), C.GoString(c.params)
		C.mg_free_call(c)
		call(id, m, p)
	}
}

func call(id int64, method, params string) {
	defer func() {
		// A panic here must not end the dispatcher: answer the call with an error.
		if r := recover(); r != nil {
			msg, _ := json.Marshal("core: panic in call: " + fmt.Sprint(r))
			post(fmt.Appendf(nil, `{"id":%d,"error":{"code":%q,"message":%s}}`, id, core.ErrPanic, msg))
		}
	}()
	theCore.Call(id, method, []byte(params))
}

func main() {}
