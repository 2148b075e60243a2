package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/internal/daemon"
	"github.com/sanboot/sanboot/internal/memrelease"
)

// serve runs the member as a service: metrics and health on
// --metrics-listen, READY=1 once the API answers, STOPPING=1 when ctx ends.
func serve(ctx context.Context, cfg controlplane.Config, common daemon.Common) error {
	log := cfg.Log
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	var ready, stopping atomic.Bool
	cfg.OnReady = func() {
		ready.Store(true)
		daemon.NotifyReady(log)
	}

	mctx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMetrics()
	var wg sync.WaitGroup
	if common.MetricsListen != "" {
		// etcd registers its own metrics (and the Go and process
		// collectors are there) in prometheus's default registry.
		h := daemon.Handler(prometheus.Gatherers{reg, prometheus.DefaultGatherer}, func() error {
			switch {
			case stopping.Load():
				return errors.New("stopping")
			case !ready.Load():
				return errors.New("starting: the etcd member or the API is not serving yet")
			}
			return nil
		})
		if common.Pprof {
			h = daemon.WithPprof(h)
		}
		srv, err := daemon.Listen(common.MetricsListen, h, log)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := srv.Run(mctx); err != nil {
				log.Error("health and metrics endpoint failed", "err", err)
			}
		})
	}
	wg.Go(func() { memrelease.Run(mctx, log, common.MemoryRelease) })
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-rctx.Done()
		stopping.Store(true)
		daemon.NotifyStopping(log)
	}()
	err := controlplane.Run(rctx, cfg)
	cancel()
	stopMetrics()
	wg.Wait()
	return err
}
