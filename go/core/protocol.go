package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// ProtocolVersion is the version of the message protocol between the host
// (TypeScript) and the core. The host refuses a core with another version.
// It must equal PROTOCOL_VERSION in src/backend/protocol.ts; the table test
// (protocol_test.go) checks both against testdata/protocol.json.
const ProtocolVersion = 4

// Error codes carried in error responses. The host maps each to an ErrorCode
// (src/backend/errors.ts); they are part of the protocol, listed in
// errorCodes so the table test sees a code added on one side only.
const (
	ErrBadArgs       = "BAD_ARGS"
	ErrAuth          = "AUTH"
	ErrControl       = "CONTROL_UNREACHABLE"
	ErrTimeout       = "TIMEOUT"
	ErrNoPeer        = "NO_PEER"
	ErrDial          = "DIAL"
	ErrPortInUse     = "PORT_IN_USE"
	ErrClosed        = "CLOSED"
	ErrWhoIsNotFound = "WHOIS_NOT_FOUND"
	ErrPanic         = "PANIC"
	ErrInternal      = "INTERNAL"
	ErrUnknownMethod = "UNKNOWN_METHOD"
)

var errorCodes = []string{ErrBadArgs, ErrAuth, ErrControl, ErrTimeout, ErrNoPeer, ErrDial, ErrPortInUse, ErrClosed, ErrWhoIsNotFound, ErrPanic, ErrInternal, ErrUnknownMethod}

// CodedError is an error with a protocol code. The code survives wrapping:
// a response carries the code of the outermost CodedError in the chain
// (errors.As) and the message of the whole chain.
type CodedError struct {
	Code string
	Err  error
}

// Error returns the message of the wrapped chain; the code is not part of it.
func (e *CodedError) Error() string { return e.Err.Error() }

// Unwrap returns the error the code was given to.
func (e *CodedError) Unwrap() error { return e.Err }

// codeErr is fmt.Errorf with a protocol code: %w in format keeps the chain.
func codeErr(code, format string, args ...any) error {
	return &CodedError{Code: code, Err: fmt.Errorf(format, args...)}
}

// wrap prefixes a method's error with the method's name ("core.Dial: ..."),
// keeping the chain, and so the protocol code, intact. Use it deferred on a
// named error result.
func wrap(err *error, op string) {
	if *err != nil {
		*err = fmt.Errorf("%s: %w", op, *err)
	}
}

// The messages of the protocol. Every method takes one params type and
// returns one result type, and every event carries one data type; the
// methods table and the events list below name them, and the table test
// (protocol_test.go) checks them against testdata/protocol.json, which the
// TypeScript side is checked against too. Slices in results are never nil
// (they go out as [], not null); a field that may be absent is omitempty.

// Empty is the params or result of a method that takes or returns nothing.
type Empty struct{}

// HelloResult is the answer to hello, the first call of a transport.
type HelloResult struct {
	Protocol  int               `json:"protocol"`
	Tailscale string            `json:"tailscale"`
	Knobs     map[string]string `json:"knobs"`
}

// ConfigureParams are the process-wide settings of configure.
type ConfigureParams struct {
	Env      map[string]string `json:"env"`
	MaxProcs int               `json:"maxProcs"`
}

// CreateParams carry the node to create.
type CreateParams struct {
	Config Config `json:"config"`
}

// NodeResult names a new node handle.
type NodeResult struct {
	Node int64 `json:"node"`
}

// NodeParams name the node a method acts on.
type NodeParams struct {
	Node int64 `json:"node"`
}

// UpParams are the params of up; TimeoutMs 0 means 60 s.
type UpParams struct {
	Node      int64 `json:"node"`
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
}

// DialParams are the params of dial; TimeoutMs 0 means 30 s.
type DialParams struct {
	Node      int64  `json:"node"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	TimeoutMs int64  `json:"timeoutMs,omitempty"`
}

// ListenParams are the params of listen.
type ListenParams struct {
	Node int64 `json:"node"`
	Port int   `json:"port"`
}

// ListenerParams name a listener handle.
type ListenerParams struct {
	Listener int64 `json:"listener"`
}

// WhoIsParams are the params of whois: Addr is "ip" or "ip:port".
type WhoIsParams struct {
	Node int64  `json:"node"`
	Addr string `json:"addr"`
}

// CloseParams are the params of close.
type CloseParams struct {
	Node   int64 `json:"node"`
	Logout bool  `json:"logout,omitempty"`
}

// ConnHandle is how the host finds a bridged connection, filled in by the
// transport's ConnBridge: natively a file descriptor. A transport that hands
// connections over another way adds its own omitempty field here.
type ConnHandle struct {
	FD *int `json:"fd,omitempty"`
	// Stream is the wasm transport's stream id: bytes travel as messages
	// between the core's worker thread and the host (go/wasm).
	Stream *int64 `json:"stream,omitempty"`
}

// DialResult is a dialed connection and how long the dial took.
type DialResult struct {
	ConnHandle
	RemoteAddr string `json:"remoteAddr"`
	LocalAddr  string `json:"localAddr"`
	DialUs     int64  `json:"dialUs"`
	WarmUpUs   int64  `json:"warmUpUs"`
	Pings      int    `json:"pings"`
}

// ListenResult names the new listener handle.
type ListenResult struct {
	Listener int64 `json:"listener"`
}

// StatusResult is a node's backend state and addresses; Name and ID are
// absent before the node is up.
type StatusResult struct {
	State  string   `json:"state"`
	IPs    []string `json:"ips"`
	Health []string `json:"health"`
	Name   string   `json:"name,omitempty"`
	ID     string   `json:"id,omitempty"`
}

// HandlesResult counts the entries of each handle table.
type HandlesResult struct {
	Nodes     int64 `json:"nodes"`
	Listeners int64 `json:"listeners"`
	Conns     int64 `json:"conns"`
}

// Event is the data of one kind of event; its Go type decides the event's name.
type Event interface{ EventName() string }

// StateEvent reports the node's backend state (ipn.State as text).
type StateEvent struct {
	State string `json:"state"`
}

// NetmapEvent carries the node's peers whenever they change.
type NetmapEvent struct {
	Peers []Peer `json:"peers"`
}

// AcceptEvent is a connection accepted on a listener.
type AcceptEvent struct {
	ConnHandle
	Listener   int64  `json:"listener"`
	RemoteAddr string `json:"remoteAddr"`
	LocalAddr  string `json:"localAddr"`
}

// ListenerClosedEvent says a listener stopped accepting.
type ListenerClosedEvent struct {
	Listener int64 `json:"listener"`
}

// LogEvent is one line of tsnet's log (verbose nodes only).
type LogEvent struct {
	Line string `json:"line"`
}

// ErrorEvent is an error the backend reported outside any call.
type ErrorEvent struct {
	Message string `json:"message"`
}

// PanicEvent is a panic recovered on one of the core's goroutines.
type PanicEvent struct {
	Where   string `json:"where"`
	Message string `json:"message"`
	Stack   string `json:"stack"`
}

// EventName is "state".
func (StateEvent) EventName() string { return "state" }

// EventName is "netmap".
func (NetmapEvent) EventName() string { return "netmap" }

// EventName is "accept".
func (AcceptEvent) EventName() string { return "accept" }

// EventName is "listenerClosed".
func (ListenerClosedEvent) EventName() string { return "listenerClosed" }

// EventName is "log".
func (LogEvent) EventName() string { return "log" }

// EventName is "error".
func (ErrorEvent) EventName() string { return "error" }

// EventName is "panic".
func (PanicEvent) EventName() string { return "panic" }

// events lists every event the core sends.
var events = []Event{StateEvent{}, NetmapEvent{}, AcceptEvent{}, ListenerClosedEvent{}, LogEvent{}, ErrorEvent{}, PanicEvent{}}

// method is one entry of the method table: its params and result types, and
// a call that decodes the params and runs it.
type method struct {
	params, result reflect.Type
	call           func(c *Core, raw []byte) (any, error)
}

// handler makes a table entry of a typed function.
func handler[P, R any](f func(c *Core, p P) (R, error)) method {
	return method{
		params: reflect.TypeFor[P](),
		result: reflect.TypeFor[R](),
		call: func(c *Core, raw []byte) (any, error) {
			var p P
			if len(raw) > 0 {
				if err := json.Unmarshal(raw, &p); err != nil {
					return nil, codeErr(ErrBadArgs, "core: bad params: %w", err)
				}
			}
			return f(c, p)
		},
	}
}

func timeout(ms int64, def time.Duration) time.Duration {
	if ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return def
}

// methods is the protocol: every method the host may call. The TypeScript
// side declares the same table (Methods in src/backend/protocol.ts).
var methods = map[string]method{
	"hello": handler(func(c *Core, _ Empty) (HelloResult, error) {
		return HelloResult{Protocol: ProtocolVersion, Knobs: Knobs(), Tailscale: tailscaleVersion()}, nil
	}),
	"configure": handler(func(c *Core, p ConfigureParams) (map[string]string, error) {
		return c.Configure(p.Env, p.MaxProcs)
	}),
	"create": handler(func(c *Core, p CreateParams) (NodeResult, error) {
		h, err := c.Create(p.Config)
		return NodeResult{Node: h}, err
	}),
	"up": handler(func(c *Core, p UpParams) (UpResult, error) {
		return c.Up(p.Node, timeout(p.TimeoutMs, 60*time.Second))
	}),
	"dial": handler(func(c *Core, p DialParams) (DialResult, error) {
		return c.Dial(p.Node, p.Host, p.Port, timeout(p.TimeoutMs, 30*time.Second))
	}),
	"listen": handler(func(c *Core, p ListenParams) (ListenResult, error) {
		h, err := c.Listen(p.Node, p.Port)
		return ListenResult{Listener: h}, err
	}),
	"closeListener": handler(func(c *Core, p ListenerParams) (Empty, error) {
		return Empty{}, c.CloseListener(p.Listener)
	}),
	"whois": handler(func(c *Core, p WhoIsParams) (WhoIsResult, error) {
		return c.WhoIs(p.Node, p.Addr)
	}),
	"peers": handler(func(c *Core, p NodeParams) ([]Peer, error) {
		return c.Peers(p.Node)
	}),
	"status": handler(func(c *Core, p NodeParams) (StatusResult, error) {
		return c.Status(p.Node)
	}),
	"ping": handler(func(c *Core, p PingParams) (PingResult, error) {
		return c.Ping(p.Node, p.Host, p.Kind, timeout(p.TimeoutMs, 5*time.Second))
	}),
	"paths": handler(func(c *Core, p NodeParams) ([]PeerPath, error) {
		return c.Paths(p.Node)
	}),
	"close": handler(func(c *Core, p CloseParams) (Empty, error) {
		return Empty{}, c.Close(p.Node, p.Logout)
	}),
	"handles": handler(func(c *Core, _ Empty) (HandlesResult, error) {
		return c.Handles(), nil
	}),
}

// testMethods holds methods that exist only in test builds (the
// meshguard_testhooks build tag, see testhooks.go, or go test). They are not
// part of the protocol table, and the published addon has none.
var testMethods = map[string]method{}

// request is one call from the host: {"id":1,"method":"dial","params":{...}}.
type request struct {
	ID     int64           `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// response is the answer to one call: a result or an error, never both.
type response struct {
	ID     int64      `json:"id"`
	Result any        `json:"result,omitempty"`
	Error  *wireError `json:"error,omitempty"`
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// eventMessage is one event: {"event":"state","node":1,"data":{...}}.
type eventMessage struct {
	Event string `json:"event"`
	Node  int64  `json:"node"`
	Data  Event  `json:"data"`
}

// Call handles one request asynchronously: it returns at once and the
// response ({"id":..,"result":..} or {"id":..,"error":{"code","message"}})
// arrives through the sink. Nothing here blocks the caller's thread.
func (c *Core) Call(id int64, method string, rawParams []byte) {
	go func() {
		GrowStack()
		var result any
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = codeErr(ErrPanic, "core: panic in %s: %v", method, r)
				result = nil
			}
			c.respond(id, result, err)
		}()
		result, err = dispatch(c, method, rawParams)
	}()
}

func (c *Core) respond(id int64, result any, err error) {
	if err != nil {
		ce := &CodedError{Code: ErrInternal}
		errors.As(err, &ce)
		c.sink(mustJSON(response{ID: id, Error: &wireError{Code: ce.Code, Message: err.Error()}}))
		return
	}
	c.sink(mustJSON(response{ID: id, Result: result}))
}

// dispatch is a function, not a method of Core, so that the table's
// handlers (which call Core's methods) and it form no initialization cycle.
func dispatch(c *Core, name string, raw []byte) (any, error) {
	m, ok := methods[name]
	if !ok {
		m, ok = testMethods[name]
	}
	if !ok {
		return nil, codeErr(ErrUnknownMethod, "core: unknown method %q", name)
	}
	return m.call(c, raw)
}

// preflight checks that the control server answers HTTP at all, so that an
// unreachable control URL fails in a second with a clear error instead of
// the backend retrying until the caller's timeout.
func preflight(ctx context.Context, controlURL string) error {
	u, err := url.Parse(controlURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return codeErr(ErrBadArgs, "controlUrl %q is not an http(s) URL", controlURL)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(pctx, "GET", strings.TrimSuffix(controlURL, "/")+"/key?v=1", nil)
	var connected atomic.Bool
	resp, err := preflightClient(&connected).Do(req)
	if err != nil {
		// A server that accepted the connection but is slow to answer is busy,
		// not unreachable (headscale bringing up a hundred all-to-all nodes on
		// a loaded machine took over 5 s): the node's own up timeout decides.
		if connected.Load() && pctx.Err() != nil && ctx.Err() == nil {
			return nil
		}
		return codeErr(ErrControl, "control server %s is unreachable: %w", controlURL, err)
	}
	resp.Body.Close()
	return nil
}

// classifyBackendErr maps the backend's error text to a protocol code.
func classifyBackendErr(msg string) error {
	low := strings.ToLower(msg)
	if strings.Contains(low, "tags") && strings.Contains(low, "not permitted") {
		return codeErr(ErrAuth, "the control server refused the node's tags (a tagged auth key already carries its tags; advertised tags must be owned per tagOwners): %s", msg)
	}
	if strings.Contains(low, "key") && (strings.Contains(low, "invalid") || strings.Contains(low, "not found") || strings.Contains(low, "expired") || strings.Contains(low, "unauthorized") || strings.Contains(low, "authkey") || strings.Contains(low, "auth key")) {
		return codeErr(ErrAuth, "the control server rejected the auth key: %s", msg)
	}
	return codeErr(ErrInternal, "backend: %s", msg)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(eventMessage{Event: "panic", Data: PanicEvent{Where: "encode", Message: err.Error()}})
	}
	return b
}

func sortPeers(ps []Peer) {
	slices.SortFunc(ps, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
}

func sortStrings(s []string) { slices.Sort(s) }
