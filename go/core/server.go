package core

import (
	"context"
	"net"

	"tailscale.com/tsd"
)

// server is what the core needs of one tailnet node. Natively it is a
// tsnet.Server (server_tsnet.go); tsnet does not build for GOOS=js
// (tailscale.com v1.102.5: its ListenTLS needs local.Client.GetCertificate,
// which is built only for !js), so the js/wasm build assembles the same
// node from Tailscale's packages (server_js.go), as Tailscale's own browser
// client cmd/tsconnect does. Both are Tailscale's code, unmodified.
type server interface {
	// Start brings the node's backend up (Up is then watched on the IPN bus).
	Start() error
	// LocalClient makes the core's LocalAPI calls to the node, in process (localclient.go).
	LocalClient() (localClient, error)
	// Dial opens a TCP connection over the tailnet to an ip:port.
	Dial(ctx context.Context, network, address string) (net.Conn, error)
	// Listen listens on a tailnet TCP port (":port").
	Listen(network, address string) (net.Listener, error)
	// Close shuts the node down (without logging out).
	Close() error
	// Sys exposes the node's subsystems (the WireGuard engine for first dials).
	Sys() *tsd.System
}
