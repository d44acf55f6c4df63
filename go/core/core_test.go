package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// message is any message the core sends, decoded for tests.
type message struct {
	ID     *int64          `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *wireError      `json:"error"`
	Event  string          `json:"event"`
	Node   int64           `json:"node"`
	Data   json.RawMessage `json:"data"`
}

// collector is a Sink that keeps messages and lets a test wait for one.
type collector struct {
	mu   sync.Mutex
	msgs []message
	cond *sync.Cond
}

func newCollector() *collector {
	c := &collector{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *collector) sink(b []byte) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	c.cond.Broadcast()
}

// wait returns the first message for which match is true.
func (c *collector) wait(t *testing.T, what string, match func(message) bool) message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for _, m := range c.msgs {
			if match(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		go func() { time.Sleep(20 * time.Millisecond); c.cond.Broadcast() }()
		c.cond.Wait()
	}
}

func (c *collector) response(t *testing.T, id int64) message {
	t.Helper()
	return c.wait(t, fmt.Sprintf("response to %d", id), func(m message) bool { return m.ID != nil && *m.ID == id })
}

type noBridge struct{}

func (noBridge) Export(c net.Conn, done func()) (ConnHandle, error) {
	c.Close()
	done()
	return ConnHandle{}, nil
}

func errCode(m message) string {
	if m.Error == nil {
		return ""
	}
	return m.Error.Code
}

// Methods that exist only in this package's test binary (the published
// table has none; see TestPublishedTableHasNoTestHooks).
func init() {
	testMethods["panicInCallTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		panic("deliberate panic for tests")
	})
	testMethods["panicOnGoroutineTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		c.goSafe("panicOnGoroutineTest", func() { panic("deliberate goroutine panic") })
		return Empty{}, nil
	})
	testMethods["wrappedErrorTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		inner := codeErr(ErrNoPeer, "inner: %w", io.ErrUnexpectedEOF)
		return Empty{}, fmt.Errorf("outer: %w", fmt.Errorf("core.Test: %w", inner))
	})
	testMethods["uncodedErrorTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		return Empty{}, fmt.Errorf("core.Test: %w", io.ErrUnexpectedEOF)
	})
}

func TestCallErrors(t *testing.T) {
	col := newCollector()
	c := New(col.sink, noBridge{})
	cases := []struct {
		method, params, code string
	}{
		{"nope", `{}`, ErrUnknownMethod},
		{"panicInCallTest", `{}`, ErrPanic},
		{"dial", `{"node":42,"host":"x","port":1}`, ErrClosed},
		{"create", `{"config":{"dir":""}}`, ErrBadArgs},
		{"create", `not json`, ErrBadArgs},
		{"dial", `{"node":"one"}`, ErrBadArgs},
		{"configure", `{"env":{"PATH":"/"}}`, ErrBadArgs},
		{"wrappedErrorTest", `{}`, ErrNoPeer},
		{"uncodedErrorTest", `{}`, ErrInternal},
		{"ping", `{"node":42,"host":"x"}`, ErrClosed},
		{"ping", `{"node":42,"host":"x","kind":"udp"}`, ErrBadArgs},
		{"paths", `{"node":42}`, ErrClosed},
	}
	for i, tc := range cases {
		c.Call(int64(i+1), tc.method, []byte(tc.params))
		if got := errCode(col.response(t, int64(i+1))); got != tc.code {
			t.Errorf("%s(%s): code %q, want %q", tc.method, tc.params, got, tc.code)
		}
	}
	if h := c.Handles(); h != (HandlesResult{}) {
		t.Errorf("handles not empty: %+v", h)
	}
}

// TestCodedErrorSurvivesWrapping: an error wrapped with %w keeps its protocol
// code (errors.As) and its cause (errors.Is), and the response carries the
// code with the message of the whole chain.
func TestCodedErrorSurvivesWrapping(t *testing.T) {
	err := fmt.Errorf("core.Dial: %w", codeErr(ErrNoPeer, "resolve: %w", io.ErrUnexpectedEOF))
	var ce *CodedError
	if !errors.As(err, &ce) || ce.Code != ErrNoPeer {
		t.Fatalf("errors.As: %v, %v", ce, err)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("errors.Is lost the cause of %v", err)
	}

	col := newCollector()
	c := New(col.sink, noBridge{})
	c.Call(1, "wrappedErrorTest", nil)
	r := col.response(t, 1)
	if r.Error == nil || r.Error.Code != ErrNoPeer || r.Error.Message != "outer: core.Test: inner: unexpected EOF" {
		t.Errorf("response error %+v, want NO_PEER with the whole chain", r.Error)
	}
	// A real method: Dial wraps the node lookup's CLOSED error with its name.
	c.Call(2, "dial", []byte(`{"node":42,"host":"x","port":1}`))
	r = col.response(t, 2)
	if r.Error == nil || r.Error.Code != ErrClosed || !strings.HasPrefix(r.Error.Message, "core.Dial: node 42 ") {
		t.Errorf("dial on a missing node: %+v, want CLOSED from core.Dial", r.Error)
	}
}

// TestPanicsAreContained: a panic inside a call answers the call with PANIC,
// one on a core goroutine becomes a "panic" event, and the core keeps
// answering afterwards.
func TestPanicsAreContained(t *testing.T) {
	col := newCollector()
	c := New(col.sink, noBridge{})
	c.Call(1, "panicInCallTest", nil)
	if r := col.response(t, 1); errCode(r) != ErrPanic || !strings.Contains(r.Error.Message, "deliberate panic") {
		t.Errorf("panicking call answered %+v", r.Error)
	}
	c.Call(2, "panicOnGoroutineTest", nil)
	ev := col.wait(t, "panic event", func(m message) bool { return m.Event == "panic" })
	var p PanicEvent
	if err := json.Unmarshal(ev.Data, &p); err != nil || p.Where != "panicOnGoroutineTest" || p.Stack == "" {
		t.Errorf("panic event %s (%v)", ev.Data, err)
	}
	c.Call(3, "handles", nil)
	if r := col.response(t, 3); r.Error != nil {
		t.Errorf("handles after the panics: %+v", r.Error)
	}
}

func TestUpFailsFastOnUnreachableControl(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := New(func([]byte) {}, noBridge{})
	id, err := c.Create(Config{Dir: t.TempDir(), ControlURL: "http://" + addr, Hostname: "x"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err = c.Up(id, 30*time.Second)
	if ce := (*CodedError)(nil); !errors.As(err, &ce) || ce.Code != ErrControl {
		t.Fatalf("Up: %v, want %s", err, ErrControl)
	}
	if d := time.Since(t0); d > 6*time.Second {
		t.Errorf("Up took %v to fail", d)
	}
	if err := c.Close(id, false); err != nil {
		t.Fatal(err)
	}
	if h := c.Handles(); h.Nodes != 0 {
		t.Errorf("node table not drained: %v", h)
	}
}

func TestConfigureAfterCreateIsRefused(t *testing.T) {
	c := New(func([]byte) {}, noBridge{})
	if _, err := c.Configure(map[string]string{"TS_NO_LOGS_NO_SUPPORT": "true"}, 0); err != nil {
		t.Fatal(err)
	}
	id, _ := c.Create(Config{Dir: t.TempDir(), ControlURL: "http://127.0.0.1:1"})
	defer c.Close(id, false)
	if _, err := c.Configure(map[string]string{"TS_NO_LOGS_NO_SUPPORT": "false"}, 0); err == nil {
		t.Fatal("Configure after Create succeeded")
	}
}

func TestMatchPeer(t *testing.T) {
	ips := []string{"fd7a:115c:a1e0::2", "100.64.0.2"}
	name := "billing.mesh.internal"
	for _, tc := range []struct {
		want string
		ok   bool
		addr string
	}{
		{"billing", true, "100.64.0.2"},
		{"billing.mesh.internal", true, "100.64.0.2"},
		{"100.64.0.2", true, "100.64.0.2"},
		{"fd7a:115c:a1e0::2", true, "fd7a:115c:a1e0::2"},
		{"bill", false, ""},
		{"billing.other", false, ""},
		{"100.64.0.3", false, ""},
	} {
		ip, err := netip.ParseAddr(tc.want)
		a, ok := matchPeer(name, ips, tc.want, ip, err == nil)
		if ok != tc.ok || (ok && a.String() != tc.addr) {
			t.Errorf("matchPeer(%q) = %v, %v; want %v, %v", tc.want, a, ok, tc.addr, tc.ok)
		}
	}
}

func TestClassifyBackendErr(t *testing.T) {
	for msg, code := range map[string]string{
		"register request: http 401: invalid key":                                ErrAuth,
		"handling register with auth key: AuthKey not found":                     ErrAuth,
		"creating new node: requested tags [tag:x] are invalid or not permitted": ErrAuth,
		"something else entirely":                                                ErrInternal,
	} {
		if got := classifyBackendErr(msg).(*CodedError).Code; got != code {
			t.Errorf("classify(%q) = %s, want %s", msg, got, code)
		}
	}
}

// ExampleCore_Call shows the protocol: a request in, a response out through the sink.
func ExampleCore_Call() {
	done := make(chan string, 1)
	c := New(func(msg []byte) { done <- string(msg) }, noBridge{})
	c.Call(1, "handles", nil)
	fmt.Println(strings.TrimSpace(<-done))
	// Output: {"id":1,"result":{"nodes":0,"listeners":0,"conns":0}}
}

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, budget uint64
		want         int
	}{
		{0, 16 << 20, gcMaxPct},          // nothing live yet: Go's default
		{8 << 20, 16 << 20, gcMaxPct},    // a small heap: capped at the default
		{64 << 20, 16 << 20, 25},         // one node: 16 MiB of garbage over 64 MiB live
		{3200 << 20, 66 << 20, gcMinPct}, // a hundred nodes: the floor
	} {
		if got := gcPercentFor(c.live, c.budget); got != c.want {
			t.Errorf("gcPercentFor(%d, %d) = %d, want %d", c.live, c.budget, got, c.want)
		}
	}
}
