//go:build js

package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"tailscale.com/control/controlclient"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnlocal"
	"tailscale.com/ipn/store"
	"tailscale.com/net/netns"
	"tailscale.com/net/tsdial"
	"tailscale.com/tsd"
	"tailscale.com/types/logid"
	"tailscale.com/wgengine"
	"tailscale.com/wgengine/netstack"
)

// jsServer is a tailnet node assembled from Tailscale's packages for
// GOOS=js, where tsnet does not build (see server.go). It wires the same
// pieces tsnet.Server.start does — a tsd.System, the userspace WireGuard
// engine, gVisor's netstack and an ipnlocal.LocalBackend — minus what js
// cannot have or an agent node does not need (log upload, the SOCKS/loopback
// server, TLS certificates, Funnel, services, and the LocalAPI: the core's
// few calls go straight to the backend, jsLocal below).
//
// Under js the Go runtime has no sockets: control and DERP go over
// WebSocket and other HTTP through fetch, both provided by the host
// (wasm/worker.mjs). magicsock sends no UDP under js (it returns errNoUDP
// for GOOS=js), so DERP is the only data path (docs/wasm.md).
type jsServer struct {
	cfg  Config
	logf func(string, ...any)

	startOnce sync.Once
	startErr  error

	sys    *tsd.System
	lb     *ipnlocal.LocalBackend
	ns     *netstack.Impl
	dialer *tsdial.Dialer

	mu        sync.Mutex
	listeners map[uint16]*jsListener
	closed    bool
}

func newServer(cfg Config, logf func(string, ...any)) server {
	return &jsServer{cfg: cfg, logf: logf, listeners: map[uint16]*jsListener{}}
}

// preflightClient is the HTTP client of the control-server preflight:
// net/http's default transport, which under js is the host's fetch.
// preflightClient: under js, Go's HTTP goes through fetch, with no dial to
// observe: `connected` stays false (a slow control server is unreachable).
func preflightClient(connected *atomic.Bool) *http.Client { return &http.Client{} }

func (s *jsServer) Start() error {
	s.startOnce.Do(func() { s.startErr = s.start() })
	return s.startErr
}

func (s *jsServer) start() (err error) {
	logf := func(format string, args ...any) { s.logf(format, args...) }
	// No socket options under js (tsconnect does the same).
	netns.SetEnabled(false)
	sys := tsd.NewSystem()
	s.sys = sys
	s.dialer = &tsdial.Dialer{Logf: logf}
	s.dialer.SetBus(sys.Bus.Get())
	eng, err := wgengine.NewUserspaceEngine(logf, wgengine.Config{
		EventBus:      sys.Bus.Get(),
		Dialer:        s.dialer,
		SetSubsystem:  sys.Set,
		ControlKnobs:  sys.ControlKnobs(),
		HealthTracker: sys.HealthTracker.Get(),
		ExtraRootCAs:  sys.ExtraRootCAs,
		Metrics:       sys.UserMetricsRegistry(),
	})
	if err != nil {
		return fmt.Errorf("wgengine: %w", err)
	}
	sys.Set(eng)
	ns, err := netstack.Create(logf, sys.Tun.Get(), eng, sys.MagicSock.Get(), s.dialer, sys.DNSManager.Get(), sys.ProxyMapper())
	if err != nil {
		eng.Close()
		return fmt.Errorf("netstack: %w", err)
	}
	sys.Tun.Get().Start()
	sys.Set(ns)
	ns.ProcessLocalIPs = true
	ns.ProcessSubnets = true
	ns.GetTCPHandlerForFlow = s.tcpHandlerForFlow
	s.ns = ns
	s.dialer.UseNetstackForIP = func(ip netip.Addr) bool {
		_, ok := s.lb.PeerForIP(ip)
		return ok
	}
	s.dialer.NetstackDialTCP = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		c, err := ns.DialContextTCP(ctx, dst)
		if err != nil {
			return nil, err // not a typed nil *gonet.TCPConn
		}
		return c, nil
	}
	st, err := store.New(logf, filepath.Join(filepath.Clean(s.cfg.Dir), "tailscaled.state"))
	if err != nil {
		ns.Close()
		eng.Close()
		return fmt.Errorf("state store: %w", err)
	}
	sys.Set(st)
	flags := controlclient.LoginDefault
	if s.cfg.Ephemeral {
		flags = controlclient.LoginEphemeral
	}
	lb, err := ipnlocal.NewLocalBackend(logf, logid.PublicID{}, sys, flags|controlclient.LocalBackendStartKeyOSNeutral)
	if err != nil {
		ns.Close()
		eng.Close()
		return fmt.Errorf("local backend: %w", err)
	}
	lb.SetVarRoot(filepath.Clean(s.cfg.Dir))
	s.lb = lb
	if err := ns.Start(lb); err != nil {
		lb.Shutdown()
		return fmt.Errorf("netstack start: %w", err)
	}
	prefs := ipn.NewPrefs()
	prefs.Hostname = s.cfg.Hostname
	prefs.WantRunning = true
	prefs.ControlURL = s.cfg.ControlURL
	prefs.AdvertiseTags = s.cfg.AdvertiseTags
	if err := lb.Start(ipn.Options{UpdatePrefs: prefs, AuthKey: s.cfg.AuthKey}); err != nil {
		lb.Shutdown()
		return fmt.Errorf("starting backend: %w", err)
	}
	if lb.State() == ipn.NeedsLogin {
		// A node without a valid key: ask the control server, which fails
		// fast on a bad key (reported on the IPN bus) or wants a browser.
		if err := lb.StartLoginInteractive(context.Background()); err != nil {
			lb.Shutdown()
			return fmt.Errorf("login: %w", err)
		}
	}
	return nil
}

func (s *jsServer) LocalClient() (localClient, error) {
	if err := s.Start(); err != nil {
		return nil, err
	}
	return lbLocal{s.lb}, nil
}

// errPeerNotFound is what WhoIs of an address no node has fails with.
var errPeerNotFound = errors.New("peer not found")

func (s *jsServer) Sys() *tsd.System { return s.sys }

// Dial dials an ip:port over the tailnet (the core resolves names itself).
func (s *jsServer) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "tcp" {
		return nil, fmt.Errorf("dial: network %q: only tcp", network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c, err := s.ns.DialContextTCP(ctx, ap)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Listen listens on a tailnet TCP port of the node (":port", any of its addresses).
func (s *jsServer) Listen(network, address string) (net.Listener, error) {
	if network != "tcp" {
		return nil, fmt.Errorf("listen: network %q: only tcp", network)
	}
	_, ps, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("listen: bad port %q", ps)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, net.ErrClosed
	}
	if _, ok := s.listeners[uint16(port)]; ok {
		return nil, fmt.Errorf("listen: port %d already in use", port)
	}
	l := &jsListener{s: s, port: uint16(port), conns: make(chan net.Conn), done: make(chan struct{})}
	s.listeners[l.port] = l
	return l, nil
}

// tcpHandlerForFlow hands an inbound flow to the listener on its port; a
// flow to a port nobody listens on is refused (intercepted, no handler),
// never forwarded to the host.
func (s *jsServer) tcpHandlerForFlow(src, dst netip.AddrPort) (func(net.Conn), bool) {
	s.mu.Lock()
	l, ok := s.listeners[dst.Port()]
	s.mu.Unlock()
	if !ok {
		return nil, true
	}
	return func(c net.Conn) {
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
		}
	}, true
}

func (s *jsServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.closed = true
	ls := make([]*jsListener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	if s.ns != nil {
		s.ns.Close()
	}
	if s.lb != nil {
		s.lb.Shutdown()
	}
	if s.dialer != nil {
		s.dialer.Close()
	}
	if s.sys != nil {
		s.sys.Bus.Get().Close()
	}
	return nil
}

// jsListener is a listener of jsServer: the netstack hands it flows.
type jsListener struct {
	s     *jsServer
	port  uint16
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *jsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *jsListener) Close() error {
	l.once.Do(func() {
		l.s.mu.Lock()
		if l.s.listeners[l.port] == l {
			delete(l.s.listeners, l.port)
		}
		l.s.mu.Unlock()
		close(l.done)
	})
	return nil
}

func (l *jsListener) Addr() net.Addr {
	return &net.TCPAddr{Port: int(l.port)}
}
