//go:build !js

package core

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnext"
	"tailscale.com/ipn/ipnlocal"
	"tailscale.com/logtail"
	"tailscale.com/tsd"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
)

// tsnetServer is the node as a tsnet.Server, whose local.Client is the core's localClient.
type tsnetServer struct{ *tsnet.Server }

// LocalClient is the node's LocalBackend itself (lbLocal) when the backend
// extension below found it, else tsnet's local.Client. The local.Client
// speaks the LocalAPI over an in-memory HTTP connection: every Status and
// every IPN bus notification is JSON-encoded by the node and decoded by the
// core. With a hundred nodes in one process that was a fifth of the
// process's CPU while they came up (docs/core.md, "Many nodes in one
// process"); lbLocal makes the same calls the LocalAPI handlers make.
func (s tsnetServer) LocalClient() (localClient, error) {
	lc, err := s.Server.LocalClient()
	if err != nil {
		return nil, err
	}
	if lb, ok := backends.Load(s.Server.Sys()); ok {
		return lbLocal{lb.(*ipnlocal.LocalBackend)}, nil
	}
	return tsnetLocal{lc}, nil
}

// backends maps each node's tsd.System to its LocalBackend, filled by the
// backend extension. tsnet.Server does not expose its LocalBackend (only to
// tests), but every LocalBackend instantiates the registered ipnext
// extensions with itself as their SafeBackend, whose Sys() is the
// tsnet.Server's Sys().
var backends sync.Map // *tsd.System → *ipnlocal.LocalBackend

const backendExtName = "meshguard-backend"

func init() {
	ipnext.RegisterExtension(backendExtName, func(_ logger.Logf, sb ipnext.SafeBackend) (ipnext.Extension, error) {
		lb, ok := sb.(*ipnlocal.LocalBackend)
		if !ok || sb.Sys() == nil {
			return nil, ipnext.SkipExtension
		}
		backends.Store(sb.Sys(), lb)
		return backendExt{sb.Sys()}, nil
	})
	// The core never uploads logs (TS_NO_LOGS_NO_SUPPORT). tsnet still
	// formats every backend log line as a JSON entry, appends it to a buffer
	// file in the node's state directory (tailscaled.log*.txt) and compresses
	// batches for an upload that is then refused: ~7 % of a 100-node
	// process's CPU while the nodes came up. Disabled, logtail drops each
	// entry before the buffer; the host's verbose logger still gets every
	// line (tsnet.Server.Logf).
	logtail.Disable()
}

// backendExt only records its LocalBackend (see backends); Shutdown forgets it.
type backendExt struct{ sys *tsd.System }

func (backendExt) Name() string           { return backendExtName }
func (backendExt) Init(ipnext.Host) error { return nil }
func (e backendExt) Shutdown() error {
	backends.Delete(e.sys)
	return nil
}

// tsnetLocal is a local.Client as a localClient (its watcher as a busWatcher).
type tsnetLocal struct{ *local.Client }

func (l tsnetLocal) WatchIPNBus(ctx context.Context, mask ipn.NotifyWatchOpt) (busWatcher, error) {
	w, err := l.Client.WatchIPNBus(ctx, mask)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// errPeerNotFound is what WhoIs of an address no node has fails with.
var errPeerNotFound = local.ErrPeerNotFound

// newServer returns the node as a tsnet.Server.
func newServer(cfg Config, logf func(string, ...any)) server {
	return tsnetServer{&tsnet.Server{
		Dir:           filepath.Clean(cfg.Dir),
		Hostname:      cfg.Hostname,
		ControlURL:    cfg.ControlURL,
		AuthKey:       cfg.AuthKey,
		Ephemeral:     cfg.Ephemeral,
		AdvertiseTags: cfg.AdvertiseTags,
		Logf:          logf,
		UserLogf:      logf,
	}}
}

// preflightClient is the HTTP client of the control-server preflight: a
// direct dial, never a proxy from the environment.
func preflightClient(connected *atomic.Bool) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		connected.Store(err == nil)
		return c, err
	}
	return &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: dial}}
}
