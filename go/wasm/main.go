//go:build js

// Command wasm is the WebAssembly transport of the meshguard core, built
// with GOOS=js GOARCH=wasm into wasm/meshguard.wasm. It runs in a Node
// worker thread (wasm/worker.mjs), which gives it a host object before
// starting it:
//
//	globalThis.meshguardHost = {
//	  post(msg: string),                  // a protocol message (response or event)
//	  data(stream: number, b: Uint8Array), // bytes read from a tailnet connection
//	  eof(stream: number),                 // the peer half-closed
//	  closed(stream: number, err: string), // the connection is gone ("" when cleanly)
//	  wrote(stream: number, n: number),    // n bytes of earlier writes reached the connection
//	}
//
// and calls what main sets on globalThis.meshguardCore: call(id, method,
// params), write(stream, Uint8Array), closeWrite(stream), close(stream),
// consumed(stream, n). Go under js runs on the thread that hosts it, so
// nothing here may block in a JS callback: each hands its work to a
// goroutine and returns.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"syscall/js"

	"github.com/meshguard/meshguard/go/core"
)

var host js.Value

func post(msg []byte) { host.Call("post", string(msg)) }

func main() {
	// Some of Tailscale's packages log through the standard logger (the DERP
	// WebSocket client does): the host's stderr is not theirs to write to.
	log.SetOutput(io.Discard)
	host = js.Global().Get("meshguardHost")
	if host.Type() != js.TypeObject {
		panic("meshguard wasm: globalThis.meshguardHost is not set (start it through wasm/worker.mjs)")
	}
	b := &streamBridge{streams: map[int64]*stream{}}
	c := core.New(post, b)
	api := map[string]any{
		"call": js.FuncOf(func(_ js.Value, args []js.Value) any {
			id, method, params := int64(args[0].Int()), args[1].String(), args[2].String()
			defer func() {
				if r := recover(); r != nil {
					msg, _ := json.Marshal("core: panic in call: " + fmt.Sprint(r))
					post(fmt.Appendf(nil, `{"id":%d,"error":{"code":%q,"message":%s}}`, id, core.ErrPanic, msg))
				}
			}()
			c.Call(id, method, []byte(params))
			return nil
		}),
		"write": js.FuncOf(func(_ js.Value, args []js.Value) any {
			buf := make([]byte, args[1].Length())
			js.CopyBytesToGo(buf, args[1])
			b.op(int64(args[0].Int()), op{data: buf})
			return nil
		}),
		"closeWrite": js.FuncOf(func(_ js.Value, args []js.Value) any {
			b.op(int64(args[0].Int()), op{closeWrite: true})
			return nil
		}),
		"close": js.FuncOf(func(_ js.Value, args []js.Value) any {
			if s := b.get(int64(args[0].Int())); s != nil {
				s.teardown("")
			}
			return nil
		}),
		"consumed": js.FuncOf(func(_ js.Value, args []js.Value) any {
			if s := b.get(int64(args[0].Int())); s != nil {
				s.credit(int64(args[1].Int()))
			}
			return nil
		}),
	}
	js.Global().Set("meshguardCore", js.ValueOf(api))
	host.Call("ready")
	select {}
}

// readWindow is how many bytes read from a connection may be on their way
// to the host and not yet consumed by it (backpressure: a host stream that
// stops reading stops the reads here, and so the peer's sends through TCP
// flow control). readChunk is one read.
const (
	readWindow = 1 << 20
	readChunk  = 64 << 10
)

// streamBridge is the wasm core.ConnBridge: a connection becomes a stream
// id, and its bytes travel as calls between Go and the host.
type streamBridge struct {
	mu      sync.Mutex
	next    int64
	streams map[int64]*stream
}

type op struct {
	data       []byte
	closeWrite bool
}

type stream struct {
	id   int64
	b    *streamBridge
	conn net.Conn
	done func()

	ops      chan op // writes and the half-close, in order
	mu       sync.Mutex
	cond     *sync.Cond
	inFlight int64 // bytes sent to the host, not consumed yet
	once     sync.Once
	gone     atomic.Bool
	halves   atomic.Int32 // directions finished cleanly (EOF read, half-close written): 2 ends the stream
}

// halfDone records one direction finished cleanly; after both the
// connection is closed, as the native bridge does.
func (s *stream) halfDone() {
	if s.halves.Add(1) == 2 {
		s.teardown("")
	}
}

// Export implements core.ConnBridge.
func (b *streamBridge) Export(c net.Conn, done func()) (core.ConnHandle, error) {
	b.mu.Lock()
	b.next++
	s := &stream{id: b.next, b: b, conn: c, done: done, ops: make(chan op, 1024)}
	s.cond = sync.NewCond(&s.mu)
	b.streams[s.id] = s
	b.mu.Unlock()
	go s.reader()
	go s.writer()
	id := s.id
	return core.ConnHandle{Stream: &id}, nil
}

func (b *streamBridge) get(id int64) *stream {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.streams[id]
}

// op queues a write or half-close of stream id. The host sends at most its
// write window ahead (it waits for "wrote"), so the queue does not fill; if
// it ever did, the stream is torn down rather than blocking the JS thread.
func (b *streamBridge) op(id int64, o op) {
	s := b.get(id)
	if s == nil || s.gone.Load() {
		return
	}
	defer func() { recover() }() // the stream closed meanwhile: nothing to write to
	select {
	case s.ops <- o:
	default:
		s.teardown("meshguard wasm: write queue overflow")
	}
}

func (s *stream) credit(n int64) {
	s.mu.Lock()
	s.inFlight -= n
	s.cond.Broadcast()
	s.mu.Unlock()
}

// reader copies the connection to the host, at most readWindow ahead of it.
func (s *stream) reader() {
	defer func() {
		if r := recover(); r != nil {
			s.teardown(fmt.Sprint("panic: ", r))
		}
	}()
	buf := make([]byte, readChunk)
	for {
		s.mu.Lock()
		for s.inFlight >= readWindow && !s.gone.Load() {
			s.cond.Wait()
		}
		s.mu.Unlock()
		if s.gone.Load() {
			return
		}
		n, err := s.conn.Read(buf)
		if n > 0 {
			s.mu.Lock()
			s.inFlight += int64(n)
			s.mu.Unlock()
			u := js.Global().Get("Uint8Array").New(n)
			js.CopyBytesToJS(u, buf[:n])
			host.Call("data", s.id, u)
		}
		if err == io.EOF {
			if !s.gone.Load() {
				host.Call("eof", s.id)
				s.halfDone()
			}
			return
		}
		if err != nil {
			s.teardown(err.Error())
			return
		}
	}
}

type closeWriter interface{ CloseWrite() error }

// writer applies the host's writes and half-close in order.
func (s *stream) writer() {
	defer func() {
		if r := recover(); r != nil {
			s.teardown(fmt.Sprint("panic: ", r))
		}
	}()
	for o := range s.ops {
		if s.gone.Load() {
			return
		}
		if o.closeWrite {
			cw, ok := s.conn.(closeWriter)
			if !ok || cw.CloseWrite() != nil {
				s.teardown("half-close failed")
				return
			}
			s.halfDone()
			continue
		}
		if _, err := s.conn.Write(o.data); err != nil {
			s.teardown(err.Error())
			return
		}
		host.Call("wrote", s.id, len(o.data))
	}
}

// teardown closes the connection once and tells the host (unless the host
// asked for it: err "" then still reports "closed" so the host can free it).
func (s *stream) teardown(err string) {
	s.once.Do(func() {
		s.gone.Store(true)
		s.conn.Close()
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
		s.b.mu.Lock()
		delete(s.b.streams, s.id)
		s.b.mu.Unlock()
		close(s.ops)
		host.Call("closed", s.id, err)
		s.done()
	})
}
