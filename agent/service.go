package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/internal/daemon"
)

// service is the agent's side of running under systemd: /healthz, /readyz
// and /metrics on --metrics-listen, READY=1 once the agent is registered
// and its first full resync is done, STOPPING=1 on the way down.
type service struct {
	stop     context.CancelFunc
	wg       sync.WaitGroup
	isDown   atomic.Bool
	log      *slog.Logger
	stopOnce sync.Once
}

func startService(ctx context.Context, listen string, g prometheus.Gatherer, reg *registry.Registry, rec *reconciler.Reconciler, log *slog.Logger) (*service, error) {
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &service{stop: cancel, log: log}
	ready := func() error {
		switch {
		case s.isDown.Load():
			return errors.New("stopping")
		case reg.Lease() == 0:
			return errors.New("not registered in etcd (no lease): is etcd reachable?")
		case rec.Problem() != "":
			return errors.New(rec.Problem())
		}
		select {
		case <-rec.Synced():
			return nil
		default:
			return errors.New("the first full resync has not finished")
		}
	}
	if listen != "" {
		srv, err := daemon.Listen(listen, daemon.Handler(g, ready), log)
		if err != nil {
			cancel()
			return nil, err
		}
		s.wg.Go(func() {
			if err := srv.Run(mctx); err != nil {
				log.Error("health and metrics endpoint failed", "err", err)
			}
		})
	}
	s.wg.Go(func() {
		for _, ch := range []<-chan struct{}{reg.Ready(), rec.Synced()} {
			select {
			case <-ch:
			case <-mctx.Done():
				return
			}
		}
		if s.isDown.Load() {
			return
		}
		log.Info("serving: registered and the first full resync is done")
		daemon.NotifyReady(log)
	})
	return s, nil
}

// stopping says STOPPING=1 and makes /readyz fail.
func (s *service) stopping() {
	s.stopOnce.Do(func() {
		s.isDown.Store(true)
		daemon.NotifyStopping(s.log)
	})
}

// close stops the HTTP endpoint.
func (s *service) close() {
	s.stop()
	s.wg.Wait()
}
