package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Default ports of --metrics-listen.
const (
	DefaultControlPlaneMetrics = "127.0.0.1:9480"
	DefaultAgentMetrics        = "127.0.0.1:9481"
)

// Handler serves /healthz (the process runs: always 200), /readyz (200 when
// ready returns nil, else 503 with its error) and /metrics (g in the
// Prometheus text format).
func Handler(g prometheus.Gatherer, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

// HTTPServer is the operator's endpoint on --metrics-listen.
type HTTPServer struct {
	lis net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds addr now, so that a taken port fails the start.
func Listen(addr string, h http.Handler, log *slog.Logger) (*HTTPServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w (give a free host:port, or an empty value to turn it off)", addr, err)
	}
	return &HTTPServer{lis: lis, log: log, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the address it listens on.
func (s *HTTPServer) Addr() string { return s.lis.Addr().String() }

// Run serves until ctx ends.
func (s *HTTPServer) Run(ctx context.Context) error {
	s.log.Info("health and metrics serving", "addr", s.Addr(), "paths", "/healthz /readyz /metrics")
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	err := s.srv.Serve(s.lis)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return fmt.Errorf("metrics endpoint %s: %w", s.Addr(), err)
}

// WithPprof adds Go's runtime profiles under /debug/pprof/ (heap,
// goroutine, profile, ...: net/http/pprof) to h, for an operator who asks
// for them (--enable-pprof): they show memory and CPU by function, and
// cost nothing until fetched.
func WithPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
