package main

// tsnetbench nodes: many tsnet nodes in this one process, the pure-Go peer of
// bench/tailnet --nodes (bench/lib/mesh-nodes.mjs is the meshguard side and
// prints the same lines).
//
//	tsnetbench nodes --control URL --authkey KEY --dir DIR --hostname PREFIX \
//	                 --n N --concurrency C --target HOST:PORT [--settle D]
//
// Node 1 starts alone, then nodes 2..N with at most C coming up at a time.
// Each node, once Up, dials the service at --target and makes one 64-byte
// echo round trip ("reached"). Lines:
//
//	{"event":"loaded","rssKiB":N}                 before any node
//	{"event":"first","ms":..,"rssKiB":N}          node 1 reached the service
//	{"event":"result","n":..,"concurrency":..,"firstMs":..,"allOnlineMs":..,
//	 "allReachedMs":..,"upMs":[..],"reachMs":[..],"rss1KiB":N,"rssAllKiB":N,
//	 "rssSettledKiB":N,"rssPeakKiB":N}
//	{"event":"stopped","closeMs":..}              after stdin closes

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"tailscale.com/tsnet"
)

func runNodes(args []string) error {
	fs := flag.NewFlagSet("nodes", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	var nf nodeFlags
	nf.register(fs)
	n := fs.Int("n", 10, "number of nodes")
	conc := fs.Int("concurrency", 1, "how many nodes may be coming up at a time (after the first)")
	target := fs.String("target", "", "HOST:PORT of the service (bench protocol)")
	settle := fs.Duration("settle", 2*time.Second, "wait after the last node reached the service before reading RSS")
	memProfile := fs.String("memprofile", "", "write a heap profile here once settled (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := nf.check(); err != nil {
		return err
	}
	if *n < 2 || *conc < 1 || *target == "" {
		return errors.New("--n must be ≥ 2, --concurrency ≥ 1, --target is required")
	}
	emit(map[string]any{"event": "loaded", "rssKiB": rssKiB("VmRSS")})

	var mu sync.Mutex
	var servers []*tsnet.Server
	defer func() {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() { shutdown(s) })
		}
		wg.Wait()
	}()
	upMs := make([]float64, *n)
	reachMs := make([]float64, *n)
	bringUp := func(k int) (time.Time, error) {
		f := nf
		f.dir = filepath.Join(nf.dir, strconv.Itoa(k))
		f.hostname = fmt.Sprintf("%s-%d", nf.hostname, k)
		s0 := time.Now()
		srv, _, _, err := f.up()
		if err != nil {
			return time.Time{}, fmt.Errorf("node %d: %w", k, err)
		}
		mu.Lock()
		servers = append(servers, srv)
		mu.Unlock()
		s1 := time.Now()
		upMs[k] = ms(s1.Sub(s0))
		if err := reachService(srv, *target); err != nil {
			return time.Time{}, fmt.Errorf("node %d: %w", k, err)
		}
		reachMs[k] = ms(time.Since(s1))
		return s1, nil
	}

	t0 := time.Now()
	if _, err := bringUp(0); err != nil {
		return err
	}
	firstMs := ms(time.Since(t0))
	rss1 := rssKiB("VmRSS")
	emit(map[string]any{"event": "first", "ms": firstMs, "rssKiB": rss1})

	next := 1
	var lastOnline time.Time
	var firstErr error
	var wg sync.WaitGroup
	for range min(*conc, *n-1) {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= *n || firstErr != nil {
					mu.Unlock()
					return
				}
				k := next
				next++
				mu.Unlock()
				online, err := bringUp(k)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if online.After(lastOnline) {
					lastOnline = online
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	allReached := ms(time.Since(t0))
	rssAll := rssKiB("VmRSS")
	time.Sleep(*settle)
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return err
		}
	}
	emit(map[string]any{
		"event": "result", "n": *n, "concurrency": *conc, "firstMs": firstMs,
		"allOnlineMs": ms(lastOnline.Sub(t0)), "allReachedMs": allReached,
		"upMs": upMs, "reachMs": reachMs,
		"rss1KiB": rss1, "rssAllKiB": rssAll, "rssSettledKiB": rssKiB("VmRSS"), "rssPeakKiB": rssKiB("VmHWM"),
	})
	io.Copy(io.Discard, os.Stdin)
	c0 := time.Now()
	var cw sync.WaitGroup
	for _, s := range servers {
		cw.Go(func() { shutdown(s) })
	}
	cw.Wait()
	servers = nil
	emit(map[string]any{"event": "stopped", "closeMs": ms(time.Since(c0))})
	return nil
}

// reachService dials target and makes one 64-byte echo round trip.
func reachService(srv *tsnet.Server, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := srv.Dial(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("dial %s: %w", target, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	msg := make([]byte, 1+msgSize)
	msg[0] = 'E'
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if _, err := io.ReadFull(c, msg[:msgSize]); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--memprofile: %w", err)
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}
