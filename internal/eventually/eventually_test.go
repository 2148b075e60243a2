package eventually_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/internal/eventually"
)

// recorder is a testing.TB that records a Fatalf instead of stopping the
// test, so the failure path can be checked.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic(r)
}

// run calls f with a recorder and returns the message it failed with, or "".
func run(t *testing.T, f func(tb testing.TB)) (msg string) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != nil {
			if p != r {
				panic(p)
			}
			msg = r.msg
		}
	}()
	f(r)
	return ""
}

func TestTrue(t *testing.T) {
	n := 0
	if msg := run(t, func(tb testing.TB) {
		eventually.True(tb, "third call", func() bool { n++; return n == 3 })
	}); msg != "" || n != 3 {
		t.Errorf("calls = %d, failure %q; want 3 calls and no failure", n, msg)
	}
}

func TestTrueTimesOutWithLastSeen(t *testing.T) {
	n := 0
	msg := run(t, func(tb testing.TB) {
		eventually.True(tb, "never", func() bool { n++; return false },
			eventually.Within(50*time.Millisecond),
			eventually.Seen(func() string { return fmt.Sprintf("call %d", n) }))
	})
	for _, want := range []string{"waiting for never", "last seen: call ", "50ms"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure %q does not hold %q", msg, want)
		}
	}
	if n < 2 {
		t.Errorf("cond called %d times, want it polled", n)
	}
}

func TestNoErrorReportsLastError(t *testing.T) {
	n := 0
	msg := run(t, func(tb testing.TB) {
		eventually.NoError(tb, "a nil error", func() error { n++; return fmt.Errorf("attempt %d: %w", n, errors.ErrUnsupported) },
			eventually.Within(50*time.Millisecond))
	})
	if !strings.Contains(msg, "waiting for a nil error; last seen: attempt ") {
		t.Errorf("failure = %q", msg)
	}
	if msg := run(t, func(tb testing.TB) {
		eventually.NoError(tb, "ok", func() error { return nil })
	}); msg != "" {
		t.Errorf("failure = %q, want none", msg)
	}
}
