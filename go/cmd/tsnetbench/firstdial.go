package main

// tsnetbench firstdial: the first-dial stall probe. It starts fresh node
// pairs again and again in this process (a new state directory, so new node
// and disco keys, and a new tailnet address each time) and times the client's
// first dial to the server, started the moment the client is online — when
// the server may not yet have heard of it from the control server.
//
//	tsnetbench firstdial --control URL --authkey KEY --dir DIR --hostname PREFIX \
//	                     [--pairs N] [--port P] [--warmup none|netmap]
//
// Lines: {"event":"pair","i":I,"dialMs":..,"warmUpMs":..,"serverUpMs":..,"clientUpMs":..}
// per pair, then {"event":"result","dialMs":[..]}.
//
// --warmup none is plain tsnet, what a Go program gets by default. --warmup
// netmap waits, before dialing, until the server lists the client among its
// peers (it can ask its own node: both are in this process): an oracle that
// shows how much of the stall is the server not knowing the client yet.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"tailscale.com/tsnet"
)

func runFirstDial(args []string) error {
	fs := flag.NewFlagSet("firstdial", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	var nf nodeFlags
	nf.register(fs)
	pairs := fs.Int("pairs", 10, "number of fresh node pairs")
	port := fs.Int("port", 4243, "tailnet TCP port the server listens on")
	warmup := fs.String("warmup", "none", "what the client does before its first dial: none, netmap")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := nf.check(); err != nil {
		return err
	}
	if *pairs < 1 || *port <= 0 || *port > 65535 {
		return errors.New("--pairs must be positive and --port in 1..65535")
	}
	if *warmup != "none" && *warmup != "netmap" {
		return fmt.Errorf("--warmup %q: want none or netmap", *warmup)
	}
	all := make([]float64, 0, *pairs)
	for i := range *pairs {
		r, err := firstDialPair(nf, i, *port, *warmup)
		if err != nil {
			return fmt.Errorf("pair %d: %w", i, err)
		}
		all = append(all, r["dialMs"].(float64))
		r["event"] = "pair"
		r["i"] = i
		emit(r)
	}
	emit(map[string]any{"event": "result", "dialMs": all})
	return nil
}

func firstDialPair(base nodeFlags, i, port int, warmup string) (map[string]any, error) {
	mk := func(role string) nodeFlags {
		n := base
		n.dir = filepath.Join(base.dir, strconv.Itoa(i), role)
		n.hostname = fmt.Sprintf("%s-%d-%s", base.hostname, i, role)
		if base.verbose {
			n.logPrefix = fmt.Sprintf("[%d %s] ", i, role)
		}
		return n
	}
	defer os.RemoveAll(filepath.Join(base.dir, strconv.Itoa(i)))

	sf := mk("server")
	server, sips, sUp, err := sf.up()
	if err != nil {
		return nil, err
	}
	var closers sync.WaitGroup
	defer closers.Wait()
	defer closers.Go(func() { shutdown(server) })
	ln, err := server.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("server listen: %w", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	target := net.JoinHostPort(sips[0], strconv.Itoa(port))

	cf := mk("client")
	client, cips, cUp, err := cf.up()
	if err != nil {
		return nil, err
	}
	defer closers.Go(func() { shutdown(client) })

	t0 := time.Now()
	if warmup == "netmap" {
		if err := waitKnows(server, cips[0]); err != nil {
			return nil, err
		}
	}
	tDial := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	d := time.Since(t0)
	c.Close()
	return map[string]any{
		"dialMs":     ms(d),
		"warmUpMs":   ms(tDial.Sub(t0)),
		"serverUpMs": ms(sUp),
		"clientUpMs": ms(cUp),
	}, nil
}

// waitKnows polls srv's status until a peer with address ip appears.
func waitKnows(srv *tsnet.Server, ip string) error {
	lc, err := srv.LocalClient()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := lc.Status(ctx)
		cancel()
		if err != nil {
			return err
		}
		for _, p := range st.Peer {
			for _, a := range p.TailscaleIPs {
				if a.String() == ip {
					return nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("server never listed the client %s among its peers", ip)
}
