package proctest

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// A program's output and environment reach its log; Stop ends it with the
// stop signal; a program started again under the same name appends.
func TestStartStopLog(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		p := Start(t, Options{Dir: dir, Name: "sh", Path: "/bin/sh",
			Args: []string{"-c", `echo "hello $WHO"; exec sleep 600`}, Env: []string{"WHO=proctest"},
			StopSignal: syscall.SIGTERM})
		for strings.Count(p.Log(), "hello proctest") < i+1 { // polls until this run has written
			select {
			case <-p.Done():
				t.Fatalf("run %d: ended before writing; log: %q", i, p.Log())
			case <-time.After(10 * time.Millisecond):
			}
		}
		p.Stop()
		if code := p.ExitCode(); code != -1 {
			t.Errorf("run %d: exit code %d after SIGTERM, want -1 (a signal)", i, code)
		}
		if n := strings.Count(p.Log(), "hello proctest"); n != i+1 {
			t.Errorf("run %d: log holds %d greetings, want %d", i, n, i+1)
		}
	}
}

func TestTail(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a\nb\nc\n", "b\nc"}, {"a", "a"}, {"", ""},
	} {
		if got := Tail(c.in, 2); got != c.want {
			t.Errorf("Tail(%q, 2) = %q, want %q", c.in, got, c.want)
		}
	}
}
