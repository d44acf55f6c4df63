package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ProtocolVersion is the version of the message protocol between the host
// (TypeScript) and the core. The host refuses a core with another version.
const ProtocolVersion = 1

// Error codes carried in error responses. The host maps them to its error
// classes; they are part of the protocol.
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

// CodedError is an error with a protocol code.
type CodedError struct {
	Code    string
	Message string
}

func (e *CodedError) Error() string { return e.Message }

func codeErr(code, format string, args ...any) error {
	return &CodedError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// request is one call from the host: {"id":1,"method":"dial","params":{...}}.
type request struct {
	ID     int64           `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

type params struct {
	Node      int64             `json:"node"`
	Listener  int64             `json:"listener"`
	Config    *Config           `json:"config"`
	Host      string            `json:"host"`
	Port      int               `json:"port"`
	Addr      string            `json:"addr"`
	TimeoutMs int64             `json:"timeoutMs"`
	Logout    bool              `json:"logout"`
	Env       map[string]string `json:"env"`
	MaxProcs  int               `json:"maxProcs"`
}

func (p *params) timeout(def time.Duration) time.Duration {
	if p.TimeoutMs > 0 {
		return time.Duration(p.TimeoutMs) * time.Millisecond
	}
	return def
}

// Call handles one request asynchronously: it returns at once and the
// response ({"id":..,"result":..} or {"id":..,"error":{"code","message"}})
// arrives through the sink. Nothing here blocks the caller's thread.
func (c *Core) Call(id int64, method string, rawParams []byte) {
	go func() {
		var result any
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = codeErr(ErrPanic, "core: panic in %s: %v", method, r)
				result = nil
			}
			c.respond(id, result, err)
		}()
		result, err = c.dispatch(method, rawParams)
	}()
}

func (c *Core) respond(id int64, result any, err error) {
	if err != nil {
		var ce *CodedError
		if !errors.As(err, &ce) {
			ce = &CodedError{Code: ErrInternal, Message: err.Error()}
		}
		c.sink([]byte(mustJSON(map[string]any{"id": id, "error": map[string]any{"code": ce.Code, "message": ce.Message}})))
		return
	}
	c.sink([]byte(mustJSON(map[string]any{"id": id, "result": result})))
}

func (c *Core) dispatch(method string, raw []byte) (any, error) {
	var p params
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, codeErr(ErrBadArgs, "%s: bad params: %v", method, err)
		}
	}
	switch method {
	case "hello":
		return map[string]any{"protocol": ProtocolVersion, "knobs": Knobs(), "tailscale": tailscaleVersion()}, nil
	case "configure":
		return c.Configure(p.Env, p.MaxProcs)
	case "create":
		if p.Config == nil {
			return nil, codeErr(ErrBadArgs, "create: config missing")
		}
		h, err := c.Create(*p.Config)
		return map[string]any{"node": h}, err
	case "up":
		return c.Up(p.Node, p.timeout(60*time.Second))
	case "dial":
		return c.Dial(p.Node, p.Host, p.Port, p.timeout(30*time.Second))
	case "listen":
		h, err := c.Listen(p.Node, p.Port)
		return map[string]any{"listener": h}, err
	case "closeListener":
		return map[string]any{}, c.CloseListener(p.Listener)
	case "whois":
		return c.WhoIs(p.Node, p.Addr)
	case "peers":
		return c.Peers(p.Node)
	case "status":
		return c.Status(p.Node)
	case "close":
		return map[string]any{}, c.Close(p.Node, p.Logout)
	case "handles":
		return c.Handles(), nil
	case "panicTest":
		// Proves that a panic in the core becomes an error, not a crash.
		panic("deliberate panic for tests")
	}
	return nil, codeErr(ErrUnknownMethod, "unknown method %q", method)
}

// preflight checks that the control server answers HTTP at all, so that an
// unreachable control URL fails in a second with a clear error instead of
// the backend retrying until the caller's timeout.
func preflight(ctx context.Context, controlURL string) error {
	u, err := url.Parse(controlURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return codeErr(ErrBadArgs, "controlUrl %q is not an http(s) URL", controlURL)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(controlURL, "/")+"/key?v=1", nil)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{}).DialContext}}
	resp, err := client.Do(req)
	if err != nil {
		return codeErr(ErrControl, "control server %s is unreachable: %v", controlURL, err)
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

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"event": "panic", "data": map[string]any{"message": "encode: " + err.Error()}})
	}
	return string(b)
}

func sortPeers(ps []Peer) {
	slices.SortFunc(ps, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
}

func sortStrings(s []string) { slices.Sort(s) }
