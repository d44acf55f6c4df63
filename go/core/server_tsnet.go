//go:build !js

package core

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/tsnet"
)

// tsnetServer is the node as a tsnet.Server, whose local.Client is the core's localClient.
type tsnetServer struct{ *tsnet.Server }

func (s tsnetServer) LocalClient() (localClient, error) {
	lc, err := s.Server.LocalClient()
	if err != nil {
		return nil, err
	}
	return tsnetLocal{lc}, nil
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
