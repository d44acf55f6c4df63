// Command addon is the native Node-API transport of the meshguard core,
// built with -buildmode=c-shared into meshguard.node.
package main

/*
#cgo CFLAGS: -DNAPI_VERSION=8
#include <stdlib.h>
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
}

//export mgCall
func mgCall(id C.longlong, method *C.char, params *C.char) {
	m, p := C.GoString(method), C.GoString(params)
	defer func() {
		// Never let a panic unwind into C: answer the call with an error.
		if r := recover(); r != nil {
			msg, _ := json.Marshal("core: panic in mgCall: " + fmt.Sprint(r))
			post(fmt.Appendf(nil, `{"id":%d,"error":{"code":%q,"message":%s}}`, int64(id), core.ErrPanic, msg))
		}
	}()
	if theCore == nil {
		panic("mgCall before mgInit")
	}
	theCore.Call(int64(id), m, []byte(p))
}

func main() {}
