// Package tgttest runs private, real tgtd daemons for tests and
// benchmarks: on free loopback portals and a control port no other tgtd
// uses (several test binaries run tgtd at once on one machine), stopped
// when the test ends.
package tgttest

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/target/tgt"
)

// FreePortal returns a 127.0.0.1:PORT nothing listens on.
func FreePortal(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreeControlPort returns a tgtd control port (tgtadm -C) no tgtd uses.
func FreeControlPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(tgt.MaxControlPort-20000)
		if _, err := os.Stat(filepath.Join(tgt.SocketDir, "socket."+strconv.Itoa(p))); errors.Is(err, os.ErrNotExist) {
			return p
		}
	}
	t.Fatal("no free tgtd control port found")
	return 0
}

// Start starts tgtd as cfg says, on a free control port and n free
// loopback portals unless cfg names them, and stops it when the test ends.
// It returns the daemon and its portals.
func Start(t testing.TB, n int, cfg tgt.ManagedConfig) (*tgt.Managed, []string) {
	t.Helper()
	if cfg.ControlPort == 0 {
		cfg.ControlPort = FreeControlPort(t)
	}
	if len(cfg.Portals) == 0 {
		for range n {
			cfg.Portals = append(cfg.Portals, FreePortal(t))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := tgt.StartManaged(ctx, cfg)
	if err != nil {
		t.Fatalf("start tgtd: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("stop tgtd: %v", err)
		}
	})
	return m, cfg.Portals
}
