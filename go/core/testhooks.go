//go:build meshguard_testhooks

package core

// This file is compiled only with the meshguard_testhooks build tag, into
// the test addon (build/meshguard-testhooks.node) that test/build.mjs makes
// for the test suite. The published addon has none of these methods.

func init() {
	// panicTest panics inside a call: the call must be answered with PANIC
	// and the host must live on.
	testMethods["panicTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		panic("deliberate panic for tests")
	})
	// panicGoroutineTest panics on a goroutine the core started: a "panic"
	// event must reach the host and the process must live on.
	testMethods["panicGoroutineTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		c.goSafe("panicGoroutineTest", func() { panic("deliberate goroutine panic for tests") })
		return Empty{}, nil
	})
	// panicUnrecoveredTest panics on a goroutine nothing recovers, as a bug
	// in a dependency's goroutine would: the Go runtime dies. Only the wasm
	// core can be tested with it (natively it ends the process, by design of
	// Go); the host must live on and fail the node's calls clearly.
	testMethods["panicUnrecoveredTest"] = handler(func(c *Core, _ Empty) (Empty, error) {
		go func() { panic("deliberate unrecovered panic for tests") }()
		return Empty{}, nil
	})
}
