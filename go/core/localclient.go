package core

import (
	"context"
	"net/netip"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// localClient is what the core asks of a node's backend: the few LocalAPI
// calls it makes. Natively it is tsnet's local.Client, which speaks the
// LocalAPI over an in-memory connection (server_tsnet.go); under js the
// same calls go straight to the ipnlocal.LocalBackend (server_js.go): the
// LocalAPI's HTTP handler reaches every one of its endpoints through its
// route table, so serving it linked 2.3 MB of code the wasm core never
// calls (docs/wasm.md).
type localClient interface {
	WatchIPNBus(ctx context.Context, mask ipn.NotifyWatchOpt) (busWatcher, error)
	Status(ctx context.Context) (*ipnstate.Status, error)
	StatusWithoutPeers(ctx context.Context) (*ipnstate.Status, error)
	Ping(ctx context.Context, ip netip.Addr, pingtype tailcfg.PingType) (*ipnstate.PingResult, error)
	WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
	Logout(ctx context.Context) error
}

// busWatcher is a subscription to the node's IPN bus (local.IPNBusWatcher's methods).
type busWatcher interface {
	Next() (ipn.Notify, error)
	Close() error
}
