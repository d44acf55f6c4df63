package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/meshguard/meshguard/go/core"
)

// fdBridge hands a tailnet connection to Node as one end of a socketpair.
// Two goroutines copy between the other end and the tailnet connection,
// passing half-closes through; Node wraps its end in a net.Socket, so
// streaming, backpressure and half-close are the kernel's.
type fdBridge struct{}

// sockBuf is the socketpair's kernel buffer each way: deep enough that a
// stream never waits on the bridge (it raised single-stream throughput from
// ~0.8x to ~1x of pure Go tsnet), and only used while data is queued.
const sockBuf = 4 << 20

// copyBuf is each copy goroutine's buffer, held for the connection's life:
// 64 KiB measured as fast as 256 KiB and 1 MiB, at a quarter of the idle cost.
const copyBuf = 64 << 10

// copyBufs recycles the copy buffers of closed connections: allocating (and
// zeroing) two fresh ones per connection was ~4 % of a warm dial's CPU time
// (docs/core.md, "Data path performance").
var copyBufs = sync.Pool{New: func() any { return new([copyBuf]byte) }}

// Export implements core.ConnBridge: the host gets the other end's fd.
func (fdBridge) Export(tc net.Conn, done func()) (core.ConnHandle, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return core.ConnHandle{}, fmt.Errorf("socketpair: %w", err)
	}
	for _, fd := range fds {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, sockBuf)
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, sockBuf)
	}
	f := os.NewFile(uintptr(fds[0]), "meshguard-conn")
	fc, err := net.FileConn(f) // dups the fd
	f.Close()
	if err != nil {
		syscall.Close(fds[1])
		return core.ConnHandle{}, fmt.Errorf("fileconn: %w", err)
	}
	uc := fc.(*net.UnixConn)
	go pump(tc, uc, done)
	return core.ConnHandle{FD: &fds[1]}, nil
}

type closeWriter interface{ CloseWrite() error }

// pump copies both ways. A clean EOF in one direction half-closes the other
// side; an error in either direction tears the whole connection down.
func pump(tc net.Conn, uc *net.UnixConn, done func()) {
	var once sync.Once
	teardown := func() {
		once.Do(func() {
			tc.Close()
			uc.Close()
		})
	}
	var wg sync.WaitGroup
	copyHalf := func(dst, src net.Conn) {
		core.GrowStack()
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				teardown()
			}
		}()
		buf := copyBufs.Get().(*[copyBuf]byte)
		_, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf[:])
		copyBufs.Put(buf)
		if err != nil {
			teardown()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if cw.CloseWrite() != nil {
				teardown()
			}
		} else {
			teardown()
		}
	}
	// One goroutine per direction: this one copies host → tailnet itself.
	wg.Add(2)
	go copyHalf(uc, tc)
	copyHalf(tc, uc)
	wg.Wait()
	teardown()
	done()
}
