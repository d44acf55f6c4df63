// Package core is meshguard's platform-neutral layer over tsnet.Server.
//
// Nodes and listeners live in tables of integer handles; callers never hold
// Go pointers. The core speaks one message protocol (see protocol.go) so the
// native Node addon and the js/wasm build are two thin transports over the
// same code. A transport supplies a ConnBridge that turns a net.Conn into
// something its host can hold (a socketpair fd natively, a stream handle in
// wasm) and a Sink that delivers outgoing messages to the host.
package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// Config describes a node to create. Field names follow the TypeScript
// options so the host can forward them unchanged.
type Config struct {
	Dir           string   `json:"dir"`
	Hostname      string   `json:"hostname"`
	ControlURL    string   `json:"controlUrl"`
	AuthKey       string   `json:"authKey"`
	Ephemeral     bool     `json:"ephemeral"`
	AdvertiseTags []string `json:"tags"`
	Verbose       bool     `json:"verbose"`
}

// node is one tsnet.Server and what the core tracks for it.
type node struct {
	id     int64
	cfg    Config
	srv    server
	lc     localClient
	ctx    context.Context // cancelled by close: aborts a pending Up and the watcher
	cancel context.CancelFunc
	logf   func(format string, args ...any)

	mu        sync.Mutex
	started   bool // Up was called
	running   bool // srv.Start succeeded, so srv.Close is safe
	closed    bool
	lastPeers string // JSON of the last peers event, to emit only changes
	peerCache []Peer // the netmap's peers as of the last change, for dials
	// removals counts netmaps and peer removals seen by the watcher;
	// cacheGen is the count the cache was computed after. While they
	// differ, a peer may have left that the (throttled) cache still lists:
	// resolve then asks Status, so a trimmed peer is NO_PEER at once.
	removals, cacheGen uint64
	warmed             map[netip.Addr]bool
	listeners          map[int64]*listener
}

type listener struct {
	id   int64
	node *node
	port int
	ln   net.Listener
}

// Core holds the handle tables. One Core serves every node of a process.
type Core struct {
	sink   Sink
	bridge ConnBridge

	mu        sync.Mutex
	nextID    int64
	nodes     map[int64]*node
	listeners map[int64]*listener
	conns     atomic.Int64 // bridged connections still open
	maxProcs  int          // GOMAXPROCS the host asked for (0: the runtime's own)
	curProcs  int          // GOMAXPROCS set now
}

// manyNodes is the number of open nodes from which the core lets Go use
// every CPU, whatever GOMAXPROCS the host asked for. The host leaves the JS
// thread a core (GOMAXPROCS = cpus − 1) for round-trip latency; on two
// cores that is one Go scheduler slot, and a hundred nodes' own work
// (netmaps, WireGuard reconfiguration) then queued behind it: 100 nodes
// all-to-all came up in 136 s with 1 and 58 s with 2 (docs/core.md, "Many
// nodes in one process").
const manyNodes = 8

// adjustProcs applies manyNodes; c.mu must be held.
func (c *Core) adjustProcs() {
	if c.maxProcs <= 0 {
		return
	}
	want := c.maxProcs
	if len(c.nodes) >= manyNodes {
		want = max(want, runtime.NumCPU())
	}
	if want != c.curProcs {
		runtime.GOMAXPROCS(want)
		c.curProcs = want
	}
}

// Sink delivers one outgoing JSON message (a response or an event) to the host.
type Sink func(msg []byte)

// ConnBridge hands a tailnet connection to the host. Export takes ownership
// of c and returns what the host needs to use it (natively a file
// descriptor). done is called once when the bridged connection is fully closed.
type ConnBridge interface {
	Export(c net.Conn, done func()) (ConnHandle, error)
}

// New returns a Core that reports through sink and bridges connections with bridge.
func New(sink Sink, bridge ConnBridge) *Core {
	return &Core{sink: sink, bridge: bridge, nodes: map[int64]*node{}, listeners: map[int64]*listener{}}
}

// SafetyKnobs are the environment settings that keep a node off Tailscale's
// public infrastructure. They must be in the environment before the Go runtime
// starts (some are read at package init); SetKnobs repeats them through
// envknob for the ones read lazily.
var SafetyKnobs = []string{"TS_NO_LOGS_NO_SUPPORT", "TS_DISABLE_PORTMAPPER", "TS_DISABLE_UPNP", "TS_DEBUG_USE_DERP_HTTP", "TS_PANIC_IF_HIT_MAIN_CONTROL"}

// Knobs reports the value the Go runtime sees for each safety knob.
func Knobs() map[string]string {
	out := map[string]string{}
	for _, k := range SafetyKnobs {
		out[k] = os.Getenv(k)
	}
	out["noLogsNoSupport"] = fmt.Sprint(envknob.NoLogsNoSupport())
	return out
}

// Configure sets Tailscale environment knobs for the whole process. A Go
// runtime inside a shared library sees the environment the process started
// with, not later changes made by the host, so the host passes the knobs
// here; envknob.Setenv also updates knobs that packages registered at init.
// Only TS_* variables are accepted, and only before the first node exists.
// maxProcs > 0 sets GOMAXPROCS: in a Node process the Go scheduler shares
// the machine with the JS thread, and leaving that thread a core of its own
// measurably lowers tailnet round trips (see docs/core.md); from manyNodes
// open nodes on, Go gets every CPU again (adjustProcs).
func (c *Core) Configure(env map[string]string, maxProcs int) (_ map[string]string, err error) {
	defer wrap(&err, "core.Configure")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nextID > 0 && len(env) > 0 {
		return nil, codeErr(ErrBadArgs, "environment knobs are process-wide and must be set before the first node is created")
	}
	for k, v := range env {
		if !strings.HasPrefix(k, "TS_") {
			return nil, codeErr(ErrBadArgs, "%q is not a TS_* knob", k)
		}
		envknob.Setenv(k, v)
	}
	if maxProcs > 0 {
		c.maxProcs = maxProcs
		c.curProcs = maxProcs
		runtime.GOMAXPROCS(maxProcs)
		c.adjustProcs()
	}
	out := Knobs()
	out["GOMAXPROCS"] = fmt.Sprint(runtime.GOMAXPROCS(0))
	return out, nil
}

func (c *Core) newID() int64 {
	c.nextID++
	return c.nextID
}

// Create registers a node without starting it, so that Close can abort a
// pending Up.
func (c *Core) Create(cfg Config) (_ int64, err error) {
	defer wrap(&err, "core.Create")
	if cfg.Dir == "" {
		return 0, codeErr(ErrBadArgs, "dir is required")
	}
	if cfg.ControlURL == "" {
		return 0, codeErr(ErrBadArgs, "controlUrl is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return 0, codeErr(ErrBadArgs, "state dir: %w", err)
	}
	n := &node{cfg: cfg, listeners: map[int64]*listener{}, warmed: map[netip.Addr]bool{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	// Logs go to the host as events when verbose, else nowhere: tsnet would
	// otherwise print to stderr of the host process. (n.id is set below,
	// before the node can log: it logs only once started.)
	n.logf = func(format string, args ...any) {
		if n.cfg.Verbose {
			c.emit(n.id, LogEvent{Line: fmt.Sprintf(format, args...)})
		}
	}
	n.srv = newServer(cfg, n.logf)
	c.mu.Lock()
	n.id = c.newID()
	c.nodes[n.id] = n
	c.adjustProcs()
	c.mu.Unlock()
	theGCTuner.nodesChanged(1)
	return n.id, nil
}

func (c *Core) node(id int64) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[id]
	if !ok {
		return nil, codeErr(ErrClosed, "node %d is closed or does not exist", id)
	}
	return n, nil
}

// UpResult is the node as it came online.
type UpResult struct {
	IPs      []string `json:"ips"`
	Name     string   `json:"name"`
	Hostname string   `json:"hostname"`
	ID       string   `json:"id"`
	Tags     []string `json:"tags"`
	OnlineMs int64    `json:"onlineMs"`
}

// Up starts the node and waits until it is Running, reporting state changes
// as "state" events. It fails fast when the control server refuses the
// connection or rejects the auth key, and after timeout otherwise.
func (c *Core) Up(id int64, timeout time.Duration) (_ UpResult, err error) {
	defer wrap(&err, "core.Up")
	n, err := c.node(id)
	if err != nil {
		return UpResult{}, err
	}
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return UpResult{}, codeErr(ErrBadArgs, "node %d already started", id)
	}
	n.started = true
	n.mu.Unlock()

	t0 := time.Now()
	theGCTuner.startingChanged(1)
	defer theGCTuner.startingChanged(-1)
	if err := preflight(n.ctx, n.cfg.ControlURL); err != nil {
		return UpResult{}, err
	}
	if err := n.srv.Start(); err != nil {
		return UpResult{}, codeErr(ErrInternal, "start: %w", err)
	}
	n.mu.Lock()
	if n.closed {
		// Close ran while Start was in progress and saw nothing to close.
		n.mu.Unlock()
		n.srv.Close()
		return UpResult{}, codeErr(ErrClosed, "node was closed while coming up")
	}
	n.running = true
	n.mu.Unlock()
	lc, err := n.srv.LocalClient()
	if err != nil {
		return UpResult{}, codeErr(ErrInternal, "local client: %w", err)
	}
	n.lc = lc

	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	watcher, err := lc.WatchIPNBus(ctx, ipn.NotifyInitialState)
	if err != nil {
		return UpResult{}, c.ctxErr(n, ctx, err, timeout)
	}
	defer watcher.Close()
	var lastState ipn.State = ipn.NoState
	for {
		msg, err := watcher.Next()
		if err != nil {
			return UpResult{}, c.ctxErr(n, ctx, err, timeout)
		}
		if msg.ErrMessage != nil {
			return UpResult{}, classifyBackendErr(*msg.ErrMessage)
		}
		if msg.State == nil {
			continue
		}
		st := *msg.State
		if st != lastState {
			lastState = st
			c.emit(id, StateEvent{State: st.String()})
		}
		if st != ipn.Running {
			continue
		}
		status, err := lc.Status(ctx)
		if err != nil {
			return UpResult{}, c.ctxErr(n, ctx, err, timeout)
		}
		if len(status.TailscaleIPs) == 0 {
			continue
		}
		out := UpResult{OnlineMs: time.Since(t0).Milliseconds(), IPs: []string{}, Tags: []string{}}
		for _, ip := range status.TailscaleIPs {
			out.IPs = append(out.IPs, ip.String())
		}
		if self := status.Self; self != nil {
			out.Name = strings.TrimSuffix(self.DNSName, ".")
			out.Hostname = self.HostName
			out.ID = string(self.ID)
			if self.Tags != nil {
				out.Tags = append(out.Tags, self.Tags.AsSlice()...)
			}
		}
		c.goSafe("watch", func() { c.watch(n) })
		return out, nil
	}
}

// ctxErr turns a failure while waiting for the node into the most useful error:
// closed by the host, timed out (saying in which state it was stuck), or the
// error itself.
func (c *Core) ctxErr(n *node, ctx context.Context, err error, timeout time.Duration) error {
	if n.ctx.Err() != nil {
		return codeErr(ErrClosed, "node was closed while coming up")
	}
	if ctx.Err() != nil {
		state := "unknown"
		hint := ""
		if st, e := n.lc.StatusWithoutPeers(context.Background()); e == nil {
			state = st.BackendState
			if st.AuthURL != "" || state == ipn.NeedsLogin.String() {
				hint = " (the control server wants an interactive login: pass a valid, unexpired auth key)"
			}
			if len(st.Health) > 0 {
				hint += "; health: " + strings.Join(st.Health, "; ")
			}
		}
		return codeErr(ErrTimeout, "node did not come online within %v (state %s)%s", timeout, state, hint)
	}
	return codeErr(ErrInternal, "%w", err)
}

// watch follows the IPN bus for the life of the node and emits a "netmap"
// event with the peer list whenever the set of peers or their fields change.
// On Linux the bus no longer carries whole netmaps at runtime, only peer
// deltas (NotifyPeerChanges); any delta marks the list dirty and one
// goroutine recomputes it, so a burst of deltas costs one Status call.
func (c *Core) watch(n *node) {
	// NotifyPeerPatches: a peer's Online/Endpoints/DERP change comes as a
	// narrow patch; without it every patch is promoted to the peer's whole
	// Node, JSON-encoded for this watcher — with every node seeing every
	// other (all-to-all) that was N whole Nodes per node per change.
	w, err := n.lc.WatchIPNBus(n.ctx, ipn.NotifyInitialNetMap|ipn.NotifyInitialState|ipn.NotifyPeerChanges|ipn.NotifyPeerPatches)
	if err != nil {
		return
	}
	defer w.Close()
	dirty := make(chan struct{}, 1)
	c.goSafe("netmap", func() {
		var last time.Time
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-dirty:
			}
			// A change after a quiet spell is computed at once; changes
			// closer together than netmapMinInterval are folded into one
			// recomputation. While many nodes join, each node would
			// otherwise recompute its whole peer list (a Status call, O(peers))
			// for every one of them.
			if wait := netmapInterval(len(n.peerList())) - time.Since(last); wait > 0 {
				select {
				case <-n.ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			last = time.Now()
			n.mu.Lock()
			gen := n.removals
			n.mu.Unlock()
			peers, err := c.peers(n, n.ctx)
			if err != nil {
				continue
			}
			js := string(mustJSON(peers))
			n.mu.Lock()
			changed := js != n.lastPeers
			n.lastPeers = js
			n.peerCache = peers
			n.cacheGen = gen
			n.mu.Unlock()
			if changed {
				c.emit(n.id, NetmapEvent{Peers: peers})
			}
		}
	})
	for {
		msg, err := w.Next()
		if err != nil {
			return
		}
		if msg.State != nil {
			c.emit(n.id, StateEvent{State: msg.State.String()})
		}
		if msg.ErrMessage != nil {
			c.emit(n.id, ErrorEvent{Message: *msg.ErrMessage})
		}
		if msg.NetMap != nil || len(msg.PeersRemoved) > 0 {
			n.mu.Lock()
			n.removals++
			n.mu.Unlock()
		}
		if msg.NetMap != nil || len(msg.PeersChanged) > 0 || len(msg.PeersRemoved) > 0 || len(msg.PeerChangedPatch) > 0 || msg.SelfChange != nil {
			select {
			case dirty <- struct{}{}:
			default:
			}
		}
	}
}

// netmapMinInterval is the shortest time between two recomputations of a
// node's peer list (see watch); each peer adds netmapPerPeer, since a
// recomputation costs O(peers) and, in a full mesh, so does the number of
// changes a node sees while others join (100 nodes all-to-all: 750 ms).
const (
	netmapMinInterval = 250 * time.Millisecond
	netmapPerPeer     = 5 * time.Millisecond
)

func netmapInterval(peers int) time.Duration {
	return netmapMinInterval + time.Duration(peers)*netmapPerPeer
}

// peerList returns the peers as of the last recomputation.
func (n *node) peerList() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peerCache
}

// Peer is a peer as the host sees it.
type Peer struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Hostname string   `json:"hostname"`
	IPs      []string `json:"ips"`
	Tags     []string `json:"tags"`
	Online   bool     `json:"online"`
	User     string   `json:"user,omitempty"`
}

func (c *Core) peers(n *node, ctx context.Context) ([]Peer, error) {
	if n.lc == nil {
		return nil, codeErr(ErrBadArgs, "node is not up yet")
	}
	st, err := n.lc.Status(ctx)
	if err != nil {
		return nil, codeErr(ErrInternal, "status: %w", err)
	}
	out := []Peer{}
	for _, p := range st.Peer {
		out = append(out, toPeer(st, p))
	}
	sortPeers(out)
	return out, nil
}

func toPeer(st *ipnstate.Status, p *ipnstate.PeerStatus) Peer {
	pe := Peer{ID: string(p.ID), Name: strings.TrimSuffix(p.DNSName, "."), Hostname: p.HostName, Online: p.Online, IPs: []string{}, Tags: []string{}}
	for _, ip := range p.TailscaleIPs {
		pe.IPs = append(pe.IPs, ip.String())
	}
	if p.Tags != nil {
		pe.Tags = append(pe.Tags, p.Tags.AsSlice()...)
	}
	if u, ok := st.User[p.UserID]; ok && len(pe.Tags) == 0 {
		pe.User = u.LoginName
	}
	return pe
}

// Peers returns the peers in the node's current netmap.
func (c *Core) Peers(id int64) (_ []Peer, err error) {
	defer wrap(&err, "core.Peers")
	n, err := c.node(id)
	if err != nil {
		return nil, err
	}
	return c.peers(n, n.ctx)
}

// Status returns the node's backend state and addresses.
func (c *Core) Status(id int64) (_ StatusResult, err error) {
	defer wrap(&err, "core.Status")
	n, err := c.node(id)
	if err != nil {
		return StatusResult{}, err
	}
	out := StatusResult{State: ipn.NoState.String(), IPs: []string{}, Health: []string{}}
	if n.lc == nil {
		return out, nil
	}
	st, err := n.lc.StatusWithoutPeers(n.ctx)
	if err != nil {
		return StatusResult{}, codeErr(ErrInternal, "%w", err)
	}
	out.State = st.BackendState
	for _, ip := range st.TailscaleIPs {
		out.IPs = append(out.IPs, ip.String())
	}
	out.Health = append(out.Health, st.Health...)
	if st.Self != nil {
		out.Name = strings.TrimSuffix(st.Self.DNSName, ".")
		out.ID = string(st.Self.ID)
	}
	return out, nil
}

// resolve maps a MagicDNS name (short or fully qualified) or a tailnet IP to
// an address of a peer in the netmap. Anything else is ErrNoPeer: the core
// never falls back to the host network or system DNS, so a tailnet dial can
// only ever reach the tailnet.
func (c *Core) resolve(n *node, host string) (netip.Addr, error) {
	want := strings.ToLower(strings.TrimSuffix(host, "."))
	ip, perr := netip.ParseAddr(want)
	isIP := perr == nil
	// The netmap watcher keeps the peer list current; a Status call through
	// the LocalAPI costs more than the dial itself, so it is only the
	// fallback for a name the cache does not know (yet).
	n.mu.Lock()
	cached := n.peerCache
	if n.cacheGen != n.removals {
		cached = nil // a peer may have left since: ask Status
	}
	n.mu.Unlock()
	for _, p := range cached {
		if a, ok := matchPeer(p.Name, p.IPs, want, ip, isIP); ok {
			return a, nil
		}
	}
	return c.resolveStatus(n, host)
}

// resolveStatus is resolve from the node's current Status, not the cache:
// the fallback for a name the cache does not know, and the check after a
// failed dial (the bus tells the watcher of a removed peer a moment after
// Status stops listing it: a dial in between used the cache's address).
func (c *Core) resolveStatus(n *node, host string) (netip.Addr, error) {
	want := strings.ToLower(strings.TrimSuffix(host, "."))
	ip, perr := netip.ParseAddr(want)
	isIP := perr == nil
	st, err := n.lc.Status(n.ctx)
	if err != nil {
		return netip.Addr{}, codeErr(ErrInternal, "status: %w", err)
	}
	var names []string
	for _, ps := range st.Peer {
		p := toPeer(st, ps)
		short, _, _ := strings.Cut(p.Name, ".")
		names = append(names, short)
		if a, ok := matchPeer(p.Name, p.IPs, want, ip, isIP); ok {
			return a, nil
		}
	}
	sortStrings(names)
	known := strings.Join(names, ", ")
	if known == "" {
		known = "none"
	}
	return netip.Addr{}, codeErr(ErrNoPeer, "%q is not a peer of this node (peers: %s); the control server only sends the peers policy lets this node reach", host, known)
}

// matchPeer reports whether want (a lower-case name without trailing dot, or
// the parsed ip) names the peer, and which of its addresses to dial (IPv4
// first for a name).
func matchPeer(name string, ips []string, want string, ip netip.Addr, isIP bool) (netip.Addr, bool) {
	fq := strings.ToLower(name)
	short, _, _ := strings.Cut(fq, ".")
	var first netip.Addr
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if isIP {
			if a == ip.Unmap() {
				return a, true
			}
			continue
		}
		if want == fq || want == short {
			if a.Is4() {
				return a, true
			}
			if !first.IsValid() {
				first = a
			}
		}
	}
	return first, first.IsValid()
}

// Dial connects to host:port over the tailnet and exports the connection.
func (c *Core) Dial(id int64, host string, port int, timeout time.Duration) (_ DialResult, err error) {
	defer wrap(&err, "core.Dial")
	n, err := c.node(id)
	if err != nil {
		return DialResult{}, err
	}
	if n.lc == nil {
		return DialResult{}, codeErr(ErrBadArgs, "node is not up; await start() first")
	}
	if port <= 0 || port > 65535 {
		return DialResult{}, codeErr(ErrBadArgs, "port %d out of range 1-65535", port)
	}
	addr, err := c.resolve(n, host)
	if err != nil {
		return DialResult{}, err
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	t0 := time.Now()
	n.mu.Lock()
	warm := n.warmed[addr]
	n.mu.Unlock()
	pings := 0
	var rtt time.Duration
	if !warm && discoPings {
		pings, rtt = c.warmUp(ctx, n, addr)
	}
	tDial := time.Now()
	conn, err := c.dialTCP(ctx, n, addr, port, warm, rtt)
	if err != nil {
		if n.ctx.Err() != nil {
			return DialResult{}, codeErr(ErrClosed, "node closed")
		}
		// The peer may have left the netmap since it was resolved: say so.
		if _, rerr := c.resolveStatus(n, host); isCode(rerr, ErrNoPeer) {
			return DialResult{}, rerr
		}
		if ctx.Err() != nil {
			return DialResult{}, codeErr(ErrTimeout, "%s:%d (%s) did not answer within %v", host, port, addr, timeout)
		}
		return DialResult{}, codeErr(ErrDial, "%s:%d (%s): %w", host, port, addr, err)
	}
	n.mu.Lock()
	n.warmed[addr] = true
	n.mu.Unlock()
	// Read the addresses first: export hands conn to the bridge, which may
	// close it at any time.
	remote, local := conn.RemoteAddr().String(), conn.LocalAddr().String()
	h, err := c.export(conn)
	if err != nil {
		return DialResult{}, err
	}
	return DialResult{
		ConnHandle: h,
		RemoteAddr: remote,
		LocalAddr:  local,
		DialUs:     time.Since(t0).Microseconds(),
		WarmUpUs:   tDial.Sub(t0).Microseconds(),
		Pings:      pings,
	}, nil
}

// warmUp makes sure a peer we never talked to knows us before the first
// dial, and measures how far away it is. A node that has just come online
// may reach a peer before the control server has told that peer its disco
// key; the peer's magicsock then drops our packets (see "First dial" in
// docs/core.md). A disco ping is answered only once the peer knows our
// disco key. The first ping to a new peer is often lost while magicsock
// sets the peer up, so pings start with a short timeout that doubles (20 ms,
// 40 ms, ... 640 ms). It returns the pings sent and the round-trip time of
// the one answered (0 if none was).
func (c *Core) warmUp(ctx context.Context, n *node, addr netip.Addr) (int, time.Duration) {
	deadline := time.Now().Add(3 * time.Second)
	wait := 20 * time.Millisecond
	pings := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pings++
		pctx, cancel := context.WithTimeout(ctx, wait)
		res, err := n.lc.Ping(pctx, addr, tailcfg.PingDisco)
		cancel()
		if err == nil && res != nil && res.Err == "" {
			return pings, time.Duration(res.LatencySeconds * float64(time.Second))
		}
		if err == nil && res != nil {
			// An immediate answer such as "unknown peer": the local engine
			// is still adding the peer; try again shortly.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if wait < 640*time.Millisecond {
			wait *= 2
		}
	}
	return pings, 0
}

// discoPings says whether magicsock sends disco pings: not under js, where
// it has no UDP and skips them altogether (wgengine/magicsock, GOOS=js), so
// the wasm core's first dial goes without the warm-up.
const discoPings = runtime.GOOS != "js"

// First-dial attempt budget (see dialTCP).
const (
	firstAttemptBase   = 150 * time.Millisecond
	firstAttemptPerRTT = 4
	firstAttemptNoRTT  = time.Second
)

// dialTCP opens the TCP connection. A dial to a peer already dialed is one
// plain tsnet dial. The first dial to a peer is made in attempts: each gets
// a budget (150 ms + 4 round trips of the warm-up ping — the handshake and
// the SYN need two — or 1 s when no ping was answered, doubling after each
// miss); an attempt that misses it is abandoned and, when WireGuard still
// has no session with the peer, the peer is reset in the WireGuard device
// (Engine.ResetDevicePeer) so the next attempt's SYN starts a new handshake
// at once. Without this a handshake initiation or response the peer dropped
// is only retried by wireguard-go after RekeyTimeout (5 s), and a new packet
// does not start one sooner (docs/core.md, "First dial").
func (c *Core) dialTCP(ctx context.Context, n *node, addr netip.Addr, port int, warm bool, rtt time.Duration) (net.Conn, error) {
	target := netip.AddrPortFrom(addr, uint16(port)).String()
	if warm {
		return n.srv.Dial(ctx, "tcp", target)
	}
	budget := firstAttemptNoRTT
	if rtt > 0 {
		budget = firstAttemptBase + firstAttemptPerRTT*rtt
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, budget)
		conn, err := n.srv.Dial(actx, "tcp", target)
		missed := err != nil && actx.Err() != nil && ctx.Err() == nil
		cancel()
		if !missed {
			return conn, err
		}
		reset := c.resetIfNoSession(ctx, n, addr)
		n.logf("meshguard: first dial to %s: no connection after %v (attempt %d); WireGuard peer reset: %v", target, budget, attempt, reset)
		budget *= 2
	}
}

// resetIfNoSession removes the peer at addr from the WireGuard device when
// no handshake with it ever completed, discarding the pending handshake and
// its 5 s retransmit timer; the next packet to the peer re-creates it and
// sends a new handshake initiation immediately. It reports whether it did.
func (c *Core) resetIfNoSession(ctx context.Context, n *node, addr netip.Addr) bool {
	who, err := n.lc.WhoIs(ctx, addr.String())
	if err != nil || who.Node == nil {
		return false
	}
	eng, ok := n.srv.Sys().Engine.GetOK()
	if !ok {
		return false
	}
	if p, ok := eng.PeerByKey(who.Node.Key); ok && !p.LastHandshake().IsZero() {
		return false // a session exists: the SYN, not the handshake, is late
	}
	eng.ResetDevicePeer(who.Node.Key)
	return true
}

func (c *Core) export(conn net.Conn) (ConnHandle, error) {
	c.conns.Add(1)
	h, err := c.bridge.Export(conn, func() { c.conns.Add(-1) })
	if err != nil {
		c.conns.Add(-1)
		conn.Close()
		return ConnHandle{}, codeErr(ErrInternal, "export connection: %w", err)
	}
	return h, nil
}

// Listen listens on a tailnet TCP port of the node. Accepted connections are
// delivered as "accept" events carrying the listener handle.
func (c *Core) Listen(id int64, port int) (_ int64, err error) {
	defer wrap(&err, "core.Listen")
	n, err := c.node(id)
	if err != nil {
		return 0, err
	}
	if n.lc == nil {
		return 0, codeErr(ErrBadArgs, "node is not up; await start() first")
	}
	if port <= 0 || port > 65535 {
		return 0, codeErr(ErrBadArgs, "port %d out of range 1-65535", port)
	}
	n.mu.Lock()
	for _, l := range n.listeners {
		if l.port == port {
			n.mu.Unlock()
			return 0, codeErr(ErrPortInUse, "tailnet port %d is already listened on by this node", port)
		}
	}
	n.mu.Unlock()
	ln, err := n.srv.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		if strings.Contains(err.Error(), "already") || strings.Contains(err.Error(), "in use") {
			return 0, codeErr(ErrPortInUse, "tailnet port %d: %w", port, err)
		}
		return 0, codeErr(ErrInternal, "%w", err)
	}
	l := &listener{node: n, port: port, ln: ln}
	c.mu.Lock()
	l.id = c.newID()
	c.listeners[l.id] = l
	c.mu.Unlock()
	n.mu.Lock()
	n.listeners[l.id] = l
	n.mu.Unlock()
	c.goSafe("accept", func() { c.acceptLoop(l) })
	return l.id, nil
}

func (c *Core) acceptLoop(l *listener) {
	defer func() {
		c.dropListener(l)
		c.emit(l.node.id, ListenerClosedEvent{Listener: l.id})
	}()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		remote, local := conn.RemoteAddr().String(), conn.LocalAddr().String()
		h, err := c.export(conn)
		if err != nil {
			continue
		}
		c.emit(l.node.id, AcceptEvent{ConnHandle: h, Listener: l.id, RemoteAddr: remote, LocalAddr: local})
	}
}

func (c *Core) dropListener(l *listener) {
	c.mu.Lock()
	delete(c.listeners, l.id)
	c.mu.Unlock()
	l.node.mu.Lock()
	delete(l.node.listeners, l.id)
	l.node.mu.Unlock()
}

// CloseListener stops accepting on a listener. Connections already accepted stay open.
func (c *Core) CloseListener(lid int64) (err error) {
	defer wrap(&err, "core.CloseListener")
	c.mu.Lock()
	l, ok := c.listeners[lid]
	c.mu.Unlock()
	if !ok {
		return codeErr(ErrClosed, "listener %d is closed", lid)
	}
	l.ln.Close()
	c.dropListener(l)
	return nil
}

// WhoIsResult is what the core knows of the node behind a tailnet address.
type WhoIsResult struct {
	Node struct {
		ID       string   `json:"id"`
		Name     string   `json:"name"`
		Hostname string   `json:"hostname"`
		Tags     []string `json:"tags"`
		IPs      []string `json:"ips"`
	} `json:"node"`
	User struct {
		Login       string `json:"login"`
		DisplayName string `json:"displayName"`
	} `json:"user"`
	Tagged bool                         `json:"tagged"`
	Caps   map[string][]json.RawMessage `json:"caps"`
}

// WhoIs identifies the node behind addr ("ip" or "ip:port").
func (c *Core) WhoIs(id int64, addr string) (_ WhoIsResult, err error) {
	defer wrap(&err, "core.WhoIs")
	n, err := c.node(id)
	if err != nil {
		return WhoIsResult{}, err
	}
	if n.lc == nil {
		return WhoIsResult{}, codeErr(ErrBadArgs, "node is not up")
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	res, err := n.lc.WhoIs(ctx, addr)
	if err != nil {
		if errors.Is(err, errPeerNotFound) || strings.Contains(err.Error(), "not found") {
			return WhoIsResult{}, codeErr(ErrWhoIsNotFound, "no tailnet node has address %s: %w", addr, err)
		}
		return WhoIsResult{}, codeErr(ErrInternal, "%w", err)
	}
	out := WhoIsResult{Caps: map[string][]json.RawMessage{}}
	out.Node.Tags, out.Node.IPs = []string{}, []string{}
	if nd := res.Node; nd != nil {
		out.Node.ID = string(nd.StableID)
		out.Node.Name = strings.TrimSuffix(nd.Name, ".")
		out.Node.Hostname = nd.ComputedName
		if nd.Hostinfo.Valid() {
			out.Node.Hostname = nd.Hostinfo.Hostname()
		}
		out.Node.Tags = append([]string{}, nd.Tags...)
		out.Tagged = len(nd.Tags) > 0
		for _, p := range nd.Addresses {
			out.Node.IPs = append(out.Node.IPs, p.Addr().String())
		}
	}
	if up := res.UserProfile; up != nil {
		out.User.Login = up.LoginName
		out.User.DisplayName = up.DisplayName
	}
	for k, vs := range res.CapMap {
		for _, v := range vs {
			out.Caps[string(k)] = append(out.Caps[string(k)], json.RawMessage(v))
		}
	}
	return out, nil
}

// Close closes a node: its listeners, then (for an ephemeral node, or when
// logout is asked) logs it out so the control server forgets it at once, then
// shuts the tsnet.Server down. Close aborts a pending Up.
func (c *Core) Close(id int64, logout bool) (err error) {
	defer wrap(&err, "core.Close")
	n, err := c.node(id)
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return codeErr(ErrClosed, "node %d is already closed", id)
	}
	n.closed = true
	ls := make([]*listener, 0, len(n.listeners))
	for _, l := range n.listeners {
		ls = append(ls, l)
	}
	n.mu.Unlock()
	for _, l := range ls {
		l.ln.Close()
		c.dropListener(l)
	}
	if n.lc != nil && (logout || n.cfg.Ephemeral) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.lc.Logout(ctx) // best effort: the inactivity timeout is the backstop
		cancel()
	}
	n.cancel()
	n.mu.Lock()
	running := n.running
	n.mu.Unlock()
	if running {
		n.srv.Close()
	}
	c.mu.Lock()
	delete(c.nodes, id)
	c.adjustProcs()
	c.mu.Unlock()
	theGCTuner.nodesChanged(-1)
	return nil
}

// Handles reports how many entries each handle table holds, so tests can
// check that closing drains them to zero.
func (c *Core) Handles() HandlesResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return HandlesResult{Nodes: int64(len(c.nodes)), Listeners: int64(len(c.listeners)), Conns: c.conns.Load()}
}

// growStackFrame is the stack frame GrowStack takes: enough that a goroutine
// starting at Go's minimum stack (2 KiB) grows to 32 KiB in one step.
const growStackFrame = 16 << 10

// growStackSink keeps GrowStack's frame from being optimised away.
var growStackSink atomic.Uint32

// GrowStack gives the calling goroutine a 32 KiB stack at once, while its
// stack is still shallow. A goroutine of the data path (a call, a bridged
// connection's copy loop) reaches ~20 KiB of stack deep inside netstack and
// WireGuard; started at 2 KiB it grows four times on the way, each growth
// copying the stack and adjusting every frame on it (decoding their stack
// maps): 12–15 % of the Go CPU of a process making or accepting warm dials
// (docs/core.md, "Warm dial: stack growth"). Growing here copies one frame.
//
//go:noinline
func GrowStack() {
	var frame [growStackFrame]byte
	i := growStackSink.Load() % growStackFrame
	frame[i] = byte(i)
	if frame[(i*31)%growStackFrame] == 0xff {
		growStackSink.Add(1)
	}
}

// goSafe runs f on a goroutine that can never take the process down: a panic
// is recovered and reported as a "panic" event.
func (c *Core) goSafe(what string, f func()) {
	go func() {
		defer c.recoverTo(what, nil)
		f()
	}()
}

func (c *Core) recoverTo(what string, onPanic func(error)) {
	if r := recover(); r != nil {
		err := codeErr(ErrPanic, "core: panic in %s: %v", what, r)
		c.emit(0, PanicEvent{Where: what, Message: fmt.Sprint(r), Stack: string(debug.Stack())})
		if onPanic != nil {
			onPanic(err)
		}
	}
}

// emit sends an event to the host.
func (c *Core) emit(nodeID int64, ev Event) {
	c.sink(mustJSON(eventMessage{Event: ev.EventName(), Node: nodeID, Data: ev}))
}

// isCode reports whether err carries the core error code code.
func isCode(err error, code string) bool {
	var ce *CodedError
	return errors.As(err, &ce) && ce.Code == code
}
