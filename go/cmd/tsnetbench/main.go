// Command tsnetbench is the pure-Go peer that bench/tailnet.mjs measures
// meshguard against: two tsnet nodes in two processes, no Node.js involved.
// Its figures are what tailscale.com/tsnet itself costs, so the gap between
// them and meshguard's is what the binding adds.
//
// Usage:
//
//	tsnetbench serve  --control URL --authkey KEY --dir DIR --hostname NAME --port P
//	tsnetbench client --control URL --authkey KEY --dir DIR --hostname NAME \
//	                  --target HOST:PORT [--rtt N] [--bytes B] [--dials D]
//
// Standard output carries only JSON lines (one object per line); diagnostics
// go to standard error. Lines:
//
//	serve:  {"event":"online","ms":..,"upMs":..,"ips":[..],"rssKiB":N}
//	        {"event":"stopped","rssKiB":N,"rssPeakKiB":N}   (after stdin closes)
//	client: {"event":"online","ms":..,"upMs":..,"ips":[..],"rssKiB":N}
//	        {"event":"result","onlineMs":..,"upMs":..,"dialMs":[..],"rttUs":[..],
//	         "throughputMiBps":..,"bytes":B,"path":"direct 127.0.0.1:41641",
//	         "rssKiB":N,"rssPeakKiB":N}
//	either: {"event":"error","message":".."} and exit status 1
//
// "ms"/"onlineMs" count from the first statement of main to Up returning;
// "upMs" from the Server.Start call to Up returning (Go runtime and package
// initialisation are in neither).
//
// Wire protocol on the tailnet port: the client's first byte picks the mode.
// 'E' echoes 64-byte messages until EOF; 'S' reads to EOF, then writes the
// byte count as 8 bytes big-endian and closes. bench/lib/loopback-server.mjs
// speaks the same protocol over plain TCP.
//
// The environment must already hold the knobs that keep a node off
// Tailscale's public services (see requiredEnv): several are read during
// package initialisation, before main runs, so only the parent can set them.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tailscale.com/tsnet"
)

// requiredEnv lists the environment the parent must set. TS_NO_LOGS_NO_SUPPORT
// is the one the brief makes mandatory; the others are checked too because a
// missing one would let this process probe the LAN gateway or fail to reach
// the local DERP, and the bench runner sets all of them anyway.
var requiredEnv = []string{
	"TS_NO_LOGS_NO_SUPPORT",
	"TS_DISABLE_PORTMAPPER",
	"TS_DISABLE_UPNP",
	"TS_DEBUG_USE_DERP_HTTP",
	"TS_PANIC_IF_HIT_MAIN_CONTROL",
}

const (
	msgSize   = 64
	chunkSize = 256 << 10
	upTimeout = 30 * time.Second
	ioTimeout = 120 * time.Second
	// logoutTimeout bounds the courtesy logout; an ephemeral node that fails
	// to log out is still reaped by the control server later.
	logoutTimeout = 5 * time.Second
)

var mainStart time.Time

var stdout = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(v map[string]any) {
	stdout.Lock()
	defer stdout.Unlock()
	_ = stdout.enc.Encode(v)
}

func fail(err error) {
	emit(map[string]any{"event": "error", "message": err.Error()})
	os.Exit(1)
}

func main() {
	mainStart = time.Now()
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("tsnetbench: ")
	if len(os.Args) < 2 {
		fail(errors.New("usage: tsnetbench serve|client|firstdial|nodes [flags]"))
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	case "firstdial":
		err = runFirstDial(os.Args[2:])
	case "nodes":
		err = runNodes(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want serve, client, firstdial or nodes)", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

// nodeFlags are the flags shared by both roles.
type nodeFlags struct {
	control, authkey, dir, hostname string
	verbose                         bool
	logPrefix                       string // firstdial: which node a verbose line came from
}

func (n *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.control, "control", "", "control server URL, must be http(s)://<IP literal>:port")
	fs.StringVar(&n.authkey, "authkey", "", "pre-auth key")
	fs.StringVar(&n.dir, "dir", "", "state directory")
	fs.StringVar(&n.hostname, "hostname", "", "node hostname")
	fs.BoolVar(&n.verbose, "verbose", false, "write tsnet backend logs to stderr")
}

func (n *nodeFlags) check() error {
	for _, k := range requiredEnv {
		if os.Getenv(k) == "" {
			return fmt.Errorf("refusing to start: environment variable %s is not set (set %s in the parent process)", k, strings.Join(requiredEnv, ", "))
		}
	}
	if n.control == "" || n.authkey == "" || n.dir == "" || n.hostname == "" {
		return errors.New("--control, --authkey, --dir and --hostname are required")
	}
	u, err := url.Parse(n.control)
	if err != nil {
		return fmt.Errorf("--control: %w", err)
	}
	// An IP-literal URL keeps the node off DNS and so off the bootstrap-DNS
	// fallback that asks Tailscale's public DERP servers.
	ip := net.ParseIP(u.Hostname())
	if (u.Scheme != "http" && u.Scheme != "https") || ip == nil {
		return fmt.Errorf("--control %q: want http(s)://<IP literal>:port", n.control)
	}
	if !ip.IsLoopback() && !ip.IsPrivate() {
		return fmt.Errorf("--control %q: refusing a public address", n.control)
	}
	return nil
}

// up starts an ephemeral tsnet node and waits until it is Running.
func (n *nodeFlags) up() (*tsnet.Server, []string, time.Duration, error) {
	srv := &tsnet.Server{
		Dir:        n.dir,
		Hostname:   n.hostname,
		AuthKey:    n.authkey,
		ControlURL: n.control,
		Ephemeral:  true,
		Logf:       func(string, ...any) {},
		UserLogf:   log.Printf,
	}
	if n.verbose {
		prefix := n.logPrefix
		srv.Logf = func(format string, args ...any) { log.Printf(prefix+format, args...) }
	}
	t0 := time.Now()
	if err := srv.Start(); err != nil {
		return nil, nil, 0, fmt.Errorf("tsnet.Start: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	st, err := srv.Up(ctx)
	if err != nil {
		srv.Close()
		return nil, nil, 0, fmt.Errorf("tsnet.Up (control %s): %w", n.control, err)
	}
	upDur := time.Since(t0)
	ips := make([]string, 0, len(st.TailscaleIPs))
	for _, ip := range st.TailscaleIPs {
		ips = append(ips, ip.String())
	}
	return srv, ips, upDur, nil
}

// shutdown logs the ephemeral node out (so it leaves the control server now
// rather than after its inactivity timeout) and closes it.
func shutdown(srv *tsnet.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer cancel()
	if lc, err := srv.LocalClient(); err == nil {
		if err := lc.Logout(ctx); err != nil {
			log.Printf("logout: %v", err)
		}
	}
	srv.Close()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	var nf nodeFlags
	nf.register(fs)
	port := fs.Int("port", 0, "tailnet TCP port to serve the bench protocol on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := nf.check(); err != nil {
		return err
	}
	if *port <= 0 || *port > 65535 {
		return errors.New("--port must be in 1..65535")
	}
	srv, ips, upDur, err := nf.up()
	if err != nil {
		return err
	}
	ln, err := srv.Listen("tcp", ":"+strconv.Itoa(*port))
	if err != nil {
		shutdown(srv)
		return fmt.Errorf("tsnet.Listen :%d: %w", *port, err)
	}
	// The listener exists before "online" is printed, so a client started on
	// that line never races it.
	emit(map[string]any{"event": "online", "ms": ms(time.Since(mainStart)), "upMs": ms(upDur), "ips": ips, "rssKiB": rssKiB("VmRSS")})

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(c)
		}
	}()

	// Serve until stdin reaches EOF (the parent closed it or died) or a signal.
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
	ln.Close()
	rss, peak := rssKiB("VmRSS"), rssKiB("VmHWM")
	shutdown(srv)
	emit(map[string]any{"event": "stopped", "rssKiB": rss, "rssPeakKiB": peak})
	return nil
}

// serveConn speaks the bench protocol on one accepted connection. Errors only
// end the connection: the client reports what it saw.
func serveConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return // a bare dial (the dial-time probe) closes without a mode byte
	}
	switch mode[0] {
	case 'E':
		buf := make([]byte, msgSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case 'S':
		n, err := io.CopyBuffer(io.Discard, c, make([]byte, chunkSize))
		if err != nil {
			log.Printf("sink: %v after %d bytes", err, n)
			return
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		c.Write(out[:])
	default:
		log.Printf("unknown mode byte %q", mode[0])
	}
}

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	var nf nodeFlags
	nf.register(fs)
	target := fs.String("target", "", "HOST:PORT of a tsnetbench serve node")
	rtt := fs.Int("rtt", 1000, "number of 64-byte round trips")
	nbytes := fs.Int64("bytes", 256<<20, "bytes to send in the throughput run")
	dials := fs.Int("dials", 5, "number of timed dials")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := nf.check(); err != nil {
		return err
	}
	if *target == "" {
		return errors.New("--target is required")
	}
	if *rtt < 1 || *nbytes < 1 || *dials < 1 {
		return errors.New("--rtt, --bytes and --dials must be positive")
	}
	srv, ips, upDur, err := nf.up()
	if err != nil {
		return err
	}
	onlineMs := ms(time.Since(mainStart))
	emit(map[string]any{"event": "online", "ms": onlineMs, "upMs": ms(upDur), "ips": ips, "rssKiB": rssKiB("VmRSS")})

	res, err := measure(srv, *target, *dials, *rtt, *nbytes)
	rss, peak := rssKiB("VmRSS"), rssKiB("VmHWM")
	shutdown(srv)
	if err != nil {
		return err
	}
	res["event"] = "result"
	res["onlineMs"] = onlineMs
	res["upMs"] = ms(upDur)
	res["bytes"] = *nbytes
	res["rssKiB"] = rss
	res["rssPeakKiB"] = peak
	emit(res)
	return nil
}

func measure(srv *tsnet.Server, target string, dials, rtt int, nbytes int64) (map[string]any, error) {
	dial := func() (net.Conn, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t0 := time.Now()
		c, err := srv.Dial(ctx, "tcp", target)
		if err != nil {
			return nil, 0, fmt.Errorf("dial %s: %w", target, err)
		}
		d := time.Since(t0)
		c.SetDeadline(time.Now().Add(ioTimeout))
		return c, d, nil
	}

	// Dial time. The first dial also pays for the WireGuard handshake with the
	// peer; it is kept, in order, so the reader can see it.
	dialMs := make([]float64, 0, dials)
	for range dials {
		c, d, err := dial()
		if err != nil {
			return nil, err
		}
		c.Close()
		dialMs = append(dialMs, ms(d))
	}

	// Round trips: one connection, one 64-byte message in flight at a time.
	c, _, err := dial()
	if err != nil {
		return nil, err
	}
	msg := make([]byte, msgSize)
	for i := range msg {
		msg[i] = byte(i)
	}
	back := make([]byte, msgSize)
	if _, err := c.Write([]byte{'E'}); err != nil {
		c.Close()
		return nil, fmt.Errorf("echo: %w", err)
	}
	rttUs := make([]float64, 0, rtt)
	for i := range rtt {
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			c.Close()
			return nil, fmt.Errorf("echo round trip %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			c.Close()
			return nil, fmt.Errorf("echo round trip %d: %w", i, err)
		}
		rttUs = append(rttUs, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	c.Close()

	// Throughput: the clock runs from the first byte written to the server's
	// count arriving, so it covers delivery, not just local buffering.
	c, _, err = dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return nil, fmt.Errorf("sink: %T has no CloseWrite", c)
	}
	chunk := make([]byte, chunkSize)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	t0 := time.Now()
	if _, err := c.Write([]byte{'S'}); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	for left := nbytes; left > 0; {
		n := min(left, int64(chunkSize))
		if _, err := c.Write(chunk[:n]); err != nil {
			return nil, fmt.Errorf("sink after %d bytes: %w", nbytes-left, err)
		}
		left -= n
	}
	if err := cw.CloseWrite(); err != nil {
		return nil, fmt.Errorf("sink CloseWrite: %w", err)
	}
	var cnt [8]byte
	if _, err := io.ReadFull(c, cnt[:]); err != nil {
		return nil, fmt.Errorf("sink count: %w", err)
	}
	el := time.Since(t0)
	if got := binary.BigEndian.Uint64(cnt[:]); got != uint64(nbytes) {
		return nil, fmt.Errorf("sink: server counted %d bytes, sent %d", got, nbytes)
	}
	return map[string]any{
		"dialMs":          dialMs,
		"rttUs":           rttUs,
		"throughputMiBps": float64(nbytes) / (1 << 20) / el.Seconds(),
		"path":            peerPath(srv, target),
	}, nil
}

// peerPath says how packets to target's node travelled: "direct <ip:port>"
// (WireGuard over UDP), "derp <region>" (relayed), or "" if unknown. Read
// after the run, so it describes the path the bulk of the bytes took.
func peerPath(srv *tsnet.Server, target string) string {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return ""
	}
	lc, err := srv.LocalClient()
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := lc.Status(ctx)
	if err != nil {
		return ""
	}
	for _, p := range st.Peer {
		for _, ip := range p.TailscaleIPs {
			if ip.String() != host {
				continue
			}
			switch {
			case p.CurAddr != "":
				return "direct " + p.CurAddr
			case p.PeerRelay != "":
				return "peer-relay " + p.PeerRelay
			case p.Relay != "":
				return "derp " + p.Relay
			}
			return ""
		}
	}
	return ""
}

// rssKiB reads one "Vm*:  N kB" field of /proc/self/status (0 if absent, e.g.
// off Linux).
func rssKiB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
