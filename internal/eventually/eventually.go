// Package eventually is the one poll-until helper for tests and benchmarks:
// a condition, a deadline, and on failure what was awaited and what was last
// seen. The deadline is a bound on how long a broken test hangs, never a
// timing assertion: it is generous because the suite runs on a loaded
// 2-core machine.
package eventually

import (
	"testing"
	"time"
)

// Timeout is the default deadline.
const Timeout = 60 * time.Second

// interval is the pause between two calls of the condition.
const interval = 20 * time.Millisecond

// Option changes one call of True.
type Option func(*config)

type config struct {
	timeout time.Duration
	seen    func() string
}

// Within replaces the default deadline, for waits known to take longer
// (a lease that must expire, a process that must start).
func Within(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// Seen describes the last state for the failure message.
func Seen(f func() string) Option { return func(c *config) { c.seen = f } }

// True calls cond until it returns true, and fails t when the deadline passes
// first, naming what was awaited and, with Seen, what was last seen.
func True(t testing.TB, what string, cond func() bool, opts ...Option) {
	t.Helper()
	c := config{timeout: Timeout}
	for _, o := range opts {
		o(&c)
	}
	deadline := time.Now().Add(c.timeout)
	for !cond() {
		if time.Now().After(deadline) {
			if c.seen != nil {
				t.Fatalf("timed out after %v waiting for %s; last seen: %s", c.timeout, what, c.seen())
			}
			t.Fatalf("timed out after %v waiting for %s", c.timeout, what)
		}
		time.Sleep(interval)
	}
}

// NoError calls f until it returns nil, and fails t when the deadline passes
// first, naming what was awaited and the last error f returned.
func NoError(t testing.TB, what string, f func() error, opts ...Option) {
	t.Helper()
	var last error
	opts = append([]Option{Seen(func() string { return last.Error() })}, opts...)
	True(t, what, func() bool { last = f(); return last == nil }, opts...)
}
