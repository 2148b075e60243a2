package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sanboot/sanboot/internal/daemon"
	"github.com/sanboot/sanboot/internal/daemon/daemontest"
)

func TestNotifyOnRealSocket(t *testing.T) {
	sock := daemontest.Listen(t)
	log := slog.New(slog.DiscardHandler)
	daemon.NotifyReady(log)
	daemon.NotifyStopping(log)
	for _, want := range []string{"READY=1", "STOPPING=1"} {
		if got := sock.Next(t, 10*time.Second); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// Without a service manager ($NOTIFY_SOCKET empty) a notification is
// neither sent nor logged; with a socket nobody listens on, it is logged
// as a warning (the manager then times the daemon out).
func TestNotifyWithoutSocket(t *testing.T) {
	for _, tc := range []struct {
		name, socket string
		want         string // in the log; "" for no log at all
	}{
		{name: "no manager", socket: ""},
		{name: "socket gone", socket: filepath.Join(t.TempDir(), "gone"), want: "could not notify the service manager"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tc.socket)
			var buf bytes.Buffer
			daemon.NotifyReady(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
			got := buf.String()
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("log = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHTTPEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	h := daemon.Handler(reg, func() error {
		if !ready.Load() {
			return errors.New("starting")
		}
		return nil
	})
	srv, err := daemon.Listen("127.0.0.1:0", h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	addr := srv.Addr()

	if code, _, err := daemontest.Get(addr, "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v", code, err)
	}
	if code, body, err := daemontest.Get(addr, "/readyz"); err != nil || code != 503 || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before ready: %d %q %v", code, body, err)
	}
	ready.Store(true)
	if code, _, err := daemontest.Get(addr, "/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz when ready: %d %v", code, err)
	}
	fams, err := daemontest.Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := daemontest.Value(fams, "test_things_total", nil); !ok || v != 3 {
		t.Errorf("test_things_total = %v (%v)", v, ok)
	}
	if _, err := daemon.Listen(addr, h, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--metrics-listen") {
		t.Errorf("a taken port: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still listening after Run returned")
	}
}

// TestPprofOnlyWhenAsked: /debug/pprof/ is served with WithPprof (the
// other endpoints still answer), and not without it.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pprof bool
		want  int
	}{
		{name: "without", want: 404},
		{name: "with", pprof: true, want: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := daemon.Handler(prometheus.NewRegistry(), func() error { return nil })
			if tc.pprof {
				h = daemon.WithPprof(h)
			}
			srv, err := daemon.Listen("127.0.0.1:0", h, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			if code, _, err := daemontest.Get(srv.Addr(), "/debug/pprof/heap"); err != nil || code != tc.want {
				t.Errorf("/debug/pprof/heap: %d %v, want %d", code, err, tc.want)
			}
			if code, _, err := daemontest.Get(srv.Addr(), "/healthz"); err != nil || code != 200 {
				t.Errorf("/healthz: %d %v", code, err)
			}
		})
	}
}
