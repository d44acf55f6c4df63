//go:build !js

package core

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"

	"tailscale.com/tsnet"
)

// newServer returns the node as a tsnet.Server.
func newServer(cfg Config, logf func(string, ...any)) server {
	return &tsnet.Server{
		Dir:           filepath.Clean(cfg.Dir),
		Hostname:      cfg.Hostname,
		ControlURL:    cfg.ControlURL,
		AuthKey:       cfg.AuthKey,
		Ephemeral:     cfg.Ephemeral,
		AdvertiseTags: cfg.AdvertiseTags,
		Logf:          logf,
		UserLogf:      logf,
	}
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
