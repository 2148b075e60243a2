// Package daemontest helps test the daemons as services: a real systemd
// notify socket (a unixgram socket named in $NOTIFY_SOCKET whose datagrams
// the test reads, as the service manager would) and a /metrics scrape
// through the Prometheus text parser.
package daemontest

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socket receives notify messages.
type Socket struct {
	conn *net.UnixConn
	msgs chan string
}

// Listen binds a unixgram socket in a temporary directory and sets
// NOTIFY_SOCKET to it for the rest of the test (so the test must not be
// parallel).
func Listen(t *testing.T) *Socket {
	t.Helper()
	// A socket path must be short (108 bytes): t.TempDir() can be long.
	dir, err := makeShortDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	s := &Socket{conn: conn, msgs: make(chan string, 64)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			for line := range strings.SplitSeq(strings.TrimSpace(string(buf[:n])), "\n") {
				s.msgs <- line
			}
		}
	}()
	return s
}

// Next returns the next message (one KEY=VALUE line), failing the test
// after timeout.
func (s *Socket) Next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case m, ok := <-s.msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no notify message after %s", timeout)
		return ""
	}
}

// Pending returns the messages received so far without waiting.
func (s *Socket) Pending() []string {
	var out []string
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				return out
			}
			out = append(out, m)
		default:
			return out
		}
	}
}
