package core

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnauth"
	"tailscale.com/ipn/ipnlocal"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// lbLocal makes the core's LocalAPI calls straight to the LocalBackend, as
// the LocalAPI's handlers do (tailscale.com/ipn/localapi, v1.102.5): no
// HTTP, and no JSON for a Status or for each IPN bus notification. Under js
// it is the only way (server_js.go); natively the core finds each tsnet
// node's LocalBackend through an ipnext extension (server_tsnet.go).
type lbLocal struct{ lb *ipnlocal.LocalBackend }

func (l lbLocal) Status(context.Context) (*ipnstate.Status, error) { return l.lb.Status(), nil }

func (l lbLocal) StatusWithoutPeers(context.Context) (*ipnstate.Status, error) {
	return l.lb.StatusWithoutPeers(), nil
}

func (l lbLocal) Ping(ctx context.Context, ip netip.Addr, pt tailcfg.PingType) (*ipnstate.PingResult, error) {
	return l.lb.Ping(ctx, ip, pt, 0)
}

func (l lbLocal) Logout(ctx context.Context) error { return l.lb.Logout(ctx, ipnauth.Self) }

// WhoIs takes an ip or ip:port, as the LocalAPI's whois does.
func (l lbLocal) WhoIs(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
	var ipp netip.AddrPort
	if ip, err := netip.ParseAddr(addr); err == nil {
		ipp = netip.AddrPortFrom(ip, 0)
	} else if ipp, err = netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("whois: invalid address %q", addr)
	}
	n, u, ok := l.lb.WhoIs("", ipp)
	if !ok {
		return nil, errPeerNotFound
	}
	res := &apitype.WhoIsResponse{Node: n.AsStruct(), UserProfile: &u}
	if n.Addresses().Len() > 0 {
		res.CapMap = l.lb.PeerCaps(n.Addresses().At(0).Addr())
	}
	return res, nil
}

// WatchIPNBus follows the backend's notifications on a goroutine of its
// own, handed to Next one at a time; Close (or ctx) ends it.
func (l lbLocal) WatchIPNBus(ctx context.Context, mask ipn.NotifyWatchOpt) (busWatcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &lbWatcher{ctx: ctx, cancel: cancel, ch: make(chan ipn.Notify), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		l.lb.WatchNotifications(ctx, mask, nil, func(n *ipn.Notify) bool {
			select {
			case w.ch <- *n: // a copy: n is the backend's, read-only
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return w, nil
}

type lbWatcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan ipn.Notify
	done   chan struct{} // the watch ended (ctx, or the backend closed it)
}

func (w *lbWatcher) Next() (ipn.Notify, error) {
	select {
	case n := <-w.ch:
		return n, nil
	case <-w.done:
		if err := w.ctx.Err(); err != nil {
			return ipn.Notify{}, err
		}
		return ipn.Notify{}, errors.New("ipn bus watch ended")
	}
}

func (w *lbWatcher) Close() error {
	w.cancel()
	return nil
}
