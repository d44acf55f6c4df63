package core

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// The Go heap of a process holding tsnet nodes is mostly buffers that are
// never touched: wireguard-go gives each receive path (three per node) and
// the TUN reader a batch of 128 message buffers of 64 KiB on Linux
// (magicsock's BatchSize), ~32 MiB of live heap per node of which a few
// pages are ever written. Go's collector sizes its next cycle from the live
// heap (GOGC=100: collect when the heap has doubled), so with one node it
// lets ~35 MiB of garbage pile up before collecting, with a hundred nodes
// gigabytes: in practice it never collects, and every byte of garbage any
// node made stays resident (measured: resident memory per added node grew
// with the number of nodes). See docs/core.md, "Memory".
//
// gcTuner therefore sets GOGC so that the garbage allowed between cycles is
// an absolute budget, gcBase plus gcPerNode per open node, instead of a
// multiple of that mostly untouched live heap. A cycle stays cheap: the
// buffers hold no pointers, so marking does not scan them. A user who sets
// GOGC in the environment keeps their value (the tuner does nothing).
//
// A node coming up allocates its ~32 MiB of buffers at once; with the tight
// budget that forced a collection (each marking every node's heap) for every
// node started, and a hundred nodes took ~1.5× as long to come up (measured).
// While nodes are starting the budget grows by gcPerStarting for each, so
// their buffers are allocated without a collection; once they are up it
// shrinks back and the next cycle collects what the start left behind.
const (
	gcBase        = 16 << 20
	gcPerNode     = 512 << 10
	gcPerStarting = 40 << 20
	gcMinPct      = 2
	gcMaxPct      = 100
	gcInterval    = 2 * time.Second
)

type gcTuner struct {
	mu       sync.Mutex
	nodes    int
	starting int
	started  bool
	pct      int
	sample   []metrics.Sample
}

var theGCTuner = &gcTuner{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}

// gcPercentFor returns the GOGC that allows budget bytes of garbage over a
// live heap of live bytes, within [gcMinPct, gcMaxPct].
func gcPercentFor(live, budget uint64) int {
	if live == 0 {
		return gcMaxPct
	}
	return int(max(gcMinPct, min(gcMaxPct, budget*100/live)))
}

// nodesChanged records that the number of open nodes changed by delta and
// retunes at once; the first call starts the periodic retuning (the live
// heap also grows as nodes learn peers).
func (t *gcTuner) nodesChanged(delta int) {
	if os.Getenv("GOGC") != "" {
		return
	}
	t.mu.Lock()
	t.nodes += delta
	start := !t.started
	t.started = true
	t.mu.Unlock()
	t.tune()
	if start {
		go func() {
			defer func() { _ = recover() }() // tuning is an optimisation: never a reason to crash
			for range time.Tick(gcInterval) {
				t.tune()
			}
		}()
	}
}

// startingChanged records that delta more (or fewer) nodes are coming up.
func (t *gcTuner) startingChanged(delta int) {
	if os.Getenv("GOGC") != "" {
		return
	}
	t.mu.Lock()
	t.starting += delta
	t.mu.Unlock()
	t.tune()
}

func (t *gcTuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	metrics.Read(t.sample)
	live := uint64(0)
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	pct := gcPercentFor(live, gcBase+uint64(max(t.nodes, 0))*gcPerNode+uint64(max(t.starting, 0))*gcPerStarting)
	if pct != t.pct {
		t.pct = pct
		debug.SetGCPercent(pct)
	}
}
