package core

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"tailscale.com/tailcfg"
)

// This file holds what `meshguard status` and `meshguard ping` ask of a
// node beyond its netmap: how each peer is reached (a direct UDP path, a
// DERP relay, a peer relay) and how far away it is. Both read Tailscale's
// own state through the node's LocalClient; nothing here changes the node.

// PingParams are the params of ping. Host is a peer's MagicDNS name (short
// or full) or tailnet IP. Kind is "disco" (the default: magicsock's own
// ping, which also reports the path), "tsmp" (through WireGuard, answered by
// the peer's Tailscale stack) or "icmp" (through WireGuard to the peer's IP
// stack). TimeoutMs 0 means 5 s.
type PingParams struct {
	Node      int64  `json:"node"`
	Host      string `json:"host"`
	Kind      string `json:"kind,omitempty"`
	TimeoutMs int64  `json:"timeoutMs,omitempty"`
}

// PingResult is one answered ping. Path is "direct", "derp" or
// "peer-relay" for a disco ping and "" for tsmp and icmp, which do not see
// the path. Endpoint is the peer's ip:port on a direct path; DERPRegion the
// relay's region code on a DERP path.
type PingResult struct {
	IP         string `json:"ip"`
	Name       string `json:"name"`
	LatencyUs  int64  `json:"latencyUs"`
	Path       string `json:"path"`
	Endpoint   string `json:"endpoint,omitempty"`
	DERPRegion string `json:"derpRegion,omitempty"`
}

// PeerPath is how this node reaches one peer as of now. Path is "direct"
// (CurAddr set), "peer-relay", "derp" (through the peer's home DERP region,
// Relay) or "none" (no path known yet). Active means traffic flowed
// recently. LastHandshakeMs is the last WireGuard handshake in Unix
// milliseconds, 0 for never.
type PeerPath struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Path            string `json:"path"`
	CurAddr         string `json:"curAddr,omitempty"`
	Relay           string `json:"relay,omitempty"`
	Active          bool   `json:"active"`
	LastHandshakeMs int64  `json:"lastHandshakeMs"`
	RxBytes         int64  `json:"rxBytes"`
	TxBytes         int64  `json:"txBytes"`
}

var pingKinds = map[string]tailcfg.PingType{"": tailcfg.PingDisco, "disco": tailcfg.PingDisco, "tsmp": tailcfg.PingTSMP, "icmp": tailcfg.PingICMP}

// Ping sends one ping to a peer and waits for the answer.
func (c *Core) Ping(id int64, host, kind string, timeout time.Duration) (_ PingResult, err error) {
	defer wrap(&err, "core.Ping")
	pt, ok := pingKinds[kind]
	if !ok {
		return PingResult{}, codeErr(ErrBadArgs, "ping kind %q: use disco, tsmp or icmp", kind)
	}
	if pt == tailcfg.PingDisco && !discoPings {
		return PingResult{}, codeErr(ErrBadArgs, "the wasm core sends no disco pings (Tailscale's magicsock skips them under GOOS=js): ping with kind \"tsmp\" or \"icmp\"")
	}
	n, err := c.node(id)
	if err != nil {
		return PingResult{}, err
	}
	if n.lc == nil {
		return PingResult{}, codeErr(ErrBadArgs, "node is not up; await start() first")
	}
	addr, err := c.resolve(n, host)
	if err != nil {
		return PingResult{}, err
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	res, err := n.lc.Ping(ctx, addr, pt)
	if err != nil {
		if n.ctx.Err() != nil {
			return PingResult{}, codeErr(ErrClosed, "node closed")
		}
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return PingResult{}, codeErr(ErrTimeout, "%s (%s) did not answer a %s ping within %v", host, addr, pt, timeout)
		}
		return PingResult{}, codeErr(ErrInternal, "%w", err)
	}
	if res.Err != "" {
		if res.IsLocalIP {
			return PingResult{}, codeErr(ErrBadArgs, "%s is this node's own address", addr)
		}
		return PingResult{}, codeErr(ErrDial, "%s (%s): %s", host, addr, res.Err)
	}
	out := PingResult{IP: addr.String(), Name: peerName(n, addr, res.NodeName), LatencyUs: int64(res.LatencySeconds * 1e6)}
	if pt == tailcfg.PingDisco {
		switch {
		case res.Endpoint != "":
			out.Path, out.Endpoint = "direct", res.Endpoint
		case res.PeerRelay != "":
			out.Path, out.Endpoint = "peer-relay", res.PeerRelay
		case res.DERPRegionID != 0:
			out.Path, out.DERPRegion = "derp", res.DERPRegionCode
		}
	}
	return out, nil
}

// peerName is the full MagicDNS name of the peer at addr, from the netmap
// the watcher keeps (the ping answer carries only the short name).
func peerName(n *node, addr netip.Addr, fallback string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.peerCache {
		if _, ok := matchPeer(p.Name, p.IPs, "", addr, true); ok {
			return p.Name
		}
	}
	return strings.TrimSuffix(fallback, ".")
}

// Paths reports, for every peer in the node's netmap, how it is reached now.
func (c *Core) Paths(id int64) (_ []PeerPath, err error) {
	defer wrap(&err, "core.Paths")
	n, err := c.node(id)
	if err != nil {
		return nil, err
	}
	if n.lc == nil {
		return nil, codeErr(ErrBadArgs, "node is not up; await start() first")
	}
	st, err := n.lc.Status(n.ctx)
	if err != nil {
		return nil, codeErr(ErrInternal, "status: %w", err)
	}
	out := []PeerPath{}
	for _, p := range st.Peer {
		pp := PeerPath{ID: string(p.ID), Name: strings.TrimSuffix(p.DNSName, "."), Relay: p.Relay, CurAddr: p.CurAddr, Active: p.Active, RxBytes: p.RxBytes, TxBytes: p.TxBytes}
		if !p.LastHandshake.IsZero() {
			pp.LastHandshakeMs = p.LastHandshake.UnixMilli()
		}
		switch {
		case p.CurAddr != "":
			pp.Path = "direct"
		case p.PeerRelay != "":
			pp.Path, pp.CurAddr = "peer-relay", p.PeerRelay
		case p.Relay != "":
			pp.Path = "derp"
		default:
			pp.Path = "none"
		}
		out = append(out, pp)
	}
	sortPaths(out)
	return out, nil
}

func sortPaths(ps []PeerPath) {
	slices.SortFunc(ps, func(a, b PeerPath) int { return strings.Compare(a.Name, b.Name) })
}
