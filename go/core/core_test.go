package core

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector is a Sink that keeps messages and lets a test wait for one.
type collector struct {
	mu   sync.Mutex
	msgs []map[string]any
	cond *sync.Cond
}

func newCollector() *collector {
	c := &collector{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *collector) sink(b []byte) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *collector) response(t *testing.T, id int64) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for _, m := range c.msgs {
			if v, ok := m["id"].(float64); ok && int64(v) == id {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no response to %d", id)
		}
		go func() { time.Sleep(20 * time.Millisecond); c.cond.Broadcast() }()
		c.cond.Wait()
	}
}

type noBridge struct{}

func (noBridge) Export(c net.Conn, done func()) (map[string]any, error) {
	c.Close()
	done()
	return map[string]any{}, nil
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func TestCallErrors(t *testing.T) {
	col := newCollector()
	c := New(col.sink, noBridge{})
	cases := []struct {
		method, params, code string
	}{
		{"nope", `{}`, ErrUnknownMethod},
		{"panicTest", `{}`, ErrPanic},
		{"dial", `{"node":42,"host":"x","port":1}`, ErrClosed},
		{"create", `{"config":{"dir":""}}`, ErrBadArgs},
		{"create", `not json`, ErrBadArgs},
		{"configure", `{"env":{"PATH":"/"}}`, ErrBadArgs},
	}
	for i, tc := range cases {
		c.Call(int64(i+1), tc.method, []byte(tc.params))
		if got := errCode(col.response(t, int64(i+1))); got != tc.code {
			t.Errorf("%s(%s): code %q, want %q", tc.method, tc.params, got, tc.code)
		}
	}
	if h := c.Handles(); h["nodes"] != 0 || h["listeners"] != 0 || h["conns"] != 0 {
		t.Errorf("handles not empty: %v", h)
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
	if ce, ok := err.(*CodedError); !ok || ce.Code != ErrControl {
		t.Fatalf("Up: %v, want %s", err, ErrControl)
	}
	if d := time.Since(t0); d > 6*time.Second {
		t.Errorf("Up took %v to fail", d)
	}
	if err := c.Close(id, false); err != nil {
		t.Fatal(err)
	}
	if h := c.Handles(); h["nodes"] != 0 {
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
	// Output: {"id":1,"result":{"conns":0,"listeners":0,"nodes":0}}
}
