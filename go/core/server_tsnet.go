//go:build !js

package core

import (
	"net"
	"net/http"
	"path/filepath"

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
func preflightClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{}).DialContext}}
}
