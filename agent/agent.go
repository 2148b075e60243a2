// Package agent assembles one storage agent: its etcd client, its store and
// iSCSI target driver (chosen by name from the table in backends.go), its
// registration under a lease, the reconciler, the exporter of images and
// its service endpoints. Run starts them and stops them in the reverse
// order, as controlplane.Run does for a control-plane member.
// agent/cmd/sanboot-agent turns its flags into a Config; integration tests
// call Run the same way.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sanboot/sanboot/agent/export"
	"github.com/sanboot/sanboot/agent/fetch"
	agentmetrics "github.com/sanboot/sanboot/agent/metrics"
	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/buildinfo"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// Config is one agent's configuration; sanboot-agent's flags fill it (see
// agent/README.md for what each means). Run expects it validated: the
// command checks each flag and says which one is wrong.
type Config struct {
	// Name is the agent's name, a DNS label unique among agents.
	Name string
	// Endpoints are etcd client URLs of control-plane members.
	Endpoints []string
	// TLS is the agent's certificate, key and CA (mutual TLS to etcd and
	// the API); empty: insecure, loopback only.
	TLS tlsconfig.Files

	// Driver is the iSCSI target driver, a name of DriverNames.
	Driver string
	// ConfigfsRoot is LIO's configfs directory (Driver lio).
	ConfigfsRoot string
	// Tgtd is TgtdManaged or TgtdSystem and TgtdControl its control
	// port (Driver tgt).
	Tgtd        string
	TgtdControl int

	// Store is where images and disks live, a name of StoreNames (or
	// "fake", which goes with the fake driver).
	Store string
	// StoreDir is the file store's directory (and the fake's root).
	StoreDir string
	// Ceph is how the rbd store reaches its pool.
	Ceph Ceph
	// FakeCapacity is the size the fake store pretends to have.
	FakeCapacity int64

	// Portals are the ADDR:PORT targets listen on; AdvertisePortals what
	// nodes are told when it differs.
	Portals, AdvertisePortals []string
	// KeepEndpoints keeps Endpoints as given. By default the etcd client
	// follows the members' advertised client URLs (AutoSync); an agent
	// that reaches etcd through a NAT or a port forward (10.0.2.2 in a
	// qemu guest) would swap them for addresses it cannot reach, and every
	// write would time out a minute after the start.
	KeepEndpoints bool
	// LeaseTTL is the registration lease's TTL.
	LeaseTTL time.Duration
	// ResyncInterval is the interval of full resyncs.
	ResyncInterval time.Duration
	// Workers is how many nodes and images are worked on at once.
	Workers int
	// RetryBase and RetryMax bound the backoff of failed work (zero: the
	// reconciler's defaults).
	RetryBase, RetryMax time.Duration

	// MetricsListen is where /healthz, /readyz and /metrics are served;
	// empty: nowhere.
	MetricsListen string
	Log           *slog.Logger
}

// Run runs the agent until ctx ends (then it revokes its lease, stops
// what it started and returns nil) or a part fails to start.
func Run(ctx context.Context, c Config) error {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	if _, err := findDriver(c.Driver); err != nil {
		return err
	}
	if err := CheckStore(c.Store, c.Driver); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metricsReg := prometheus.WrapRegistererWith(prometheus.Labels{"agent": c.Name}, reg)
	var tlsConfig *tls.Config
	if c.TLS.Enabled() {
		var err error
		if tlsConfig, err = c.TLS.Client(); err != nil {
			return err
		}
	}
	// Several members: the client balances over them and fails over on its
	// own; keepalive pings notice a member cut off from the network, and
	// the endpoint list follows the cluster's members (AutoSync, unless
	// KeepEndpoints), so an agent given one member still finds the others.
	autoSync := time.Minute
	if c.KeepEndpoints {
		autoSync = 0
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: tlsConfig,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second, AutoSyncInterval: autoSync})
	if err != nil {
		return fmt.Errorf("etcd client for %v: %w", c.Endpoints, err)
	}
	defer cli.Close()
	if tlsConfig != nil {
		if err := checkEnrolled(ctx, cli, c.Name); err != nil {
			return err
		}
	}
	// The file store fetches upload sources from the control-plane member
	// that staged them (found in etcd), url sources over HTTP: package
	// fetch.
	b, err := openBackends(ctx, c, fetch.New(fetch.Config{Client: cli, TLS: tlsConfig, Log: log}).Open, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := b.close(ctx); err != nil {
			log.Error("stopping the target system and store", "err", err)
		}
	}()
	st := b.store
	drv, err := agentmetrics.NewDriver(b.driver, metricsReg)
	if err != nil {
		return err
	}

	log.Info("starting", "agent", c.Name, "version", buildinfo.Version(), "etcd", c.Endpoints, "driver", c.Driver,
		"portals", c.Portals, "advertise", c.AdvertisePortals)
	if tlsConfig != nil {
		log.Info("mutual TLS to etcd and the API", "cert", c.TLS.CertFile, "cacert", c.TLS.TrustedCAFile)
	} else {
		log.Warn("insecure mode: the connections to etcd and the API are not encrypted nor authenticated; give --cert, --key and --cacert beyond one host")
	}

	// An agent whose disks other agents can serve (a storage domain)
	// fences itself while its lease is lost: see reconciler.Fence.
	fence := func(bool) {}
	var onLost, onRegistered func()
	domain := storageDomain(st)
	if domain != "" {
		onLost, onRegistered = func() { fence(true) }, func() { fence(false) }
	}
	capacity := func(ctx context.Context) (int64, int64, error) {
		cp, err := st.Capacity(ctx)
		return cp.CapacityBytes, cp.FreeBytes, err
	}
	registration, err := registry.New(cli, registry.Config{
		Name: c.Name, Version: buildinfo.Version(), Driver: drv.Name(),
		Portals: c.Portals, AdvertisePortals: c.AdvertisePortals, CloneMode: string(st.CloneMode()),
		StoreKind: b.storeKind, StorageDomain: domain, OnLost: onLost, OnRegistered: onRegistered,
		TTL: c.LeaseTTL, Log: log, TargetsOutlive: b.targetsOutlive, Capacity: capacity,
	})
	if err != nil {
		return err
	}
	var onRetry func(string)
	rec, err := reconciler.New(reconciler.Config{
		Agent: c.Name, Client: cli, Store: st, Driver: drv,
		Portals: c.Portals, AdvertisePortals: c.AdvertisePortals,
		Workers: c.Workers, ResyncInterval: c.ResyncInterval, RetryBase: c.RetryBase, RetryMax: c.RetryMax,
		Log: log, SharedStore: domain != "",
		OnRetry:       func(kind string) { onRetry(kind) },
		TargetProblem: b.targetProblem,
		OnProblem:     registration.SetProblem,
	})
	if err != nil {
		return err
	}
	fence = func(on bool) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := rec.Fence(fctx, on); err != nil {
			log.Error("fencing", "err", err)
		}
	}
	if onRetry, err = agentmetrics.Queue(metricsReg, rec.QueueLen); err != nil {
		return err
	}
	if err := agentmetrics.Store(metricsReg, capacity); err != nil {
		return err
	}
	exp, err := newExporter(c.Name, cli, tlsConfig, st, log)
	if err != nil {
		return err
	}
	svc, err := startService(ctx, c.MetricsListen, reg, registration, rec, log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = registration.Run(ctx) })
	wg.Go(func() { _ = rec.Run(ctx) })
	wg.Go(func() { _ = exp.Run(ctx) })
	if b.keeper != nil {
		b.onTgtd = rec.CheckTargets
		wg.Go(func() { _ = b.keeper.Run(ctx) })
	}
	<-ctx.Done()
	svc.stopping()
	log.Info("stopping: revoking the lease, so the agent shows as Unavailable now")
	wg.Wait()
	svc.close()
	return nil
}

// checkEnrolled reads the agent's own record: with TLS, etcd refuses an
// agent whose certificate has no etcd user yet.
func checkEnrolled(ctx context.Context, cli *clientv3.Client, name string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := cli.Get(cctx, api.AgentKey(name))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrPermissionDenied) || strings.Contains(err.Error(), "user name not found"):
		return fmt.Errorf("etcd refuses agent %s (%v): it is not enrolled yet; on the operator's machine run: sanbootctl agents enroll %s", name, err, name)
	default:
		return fmt.Errorf("etcd at %v: %w; check --etcd-endpoints and that --cert was issued by the cluster's CA", cli.Endpoints(), err)
	}
}

// newExporter answers the export requests for this agent with the images
// of st; a store that keeps no bytes (the fake) answers each with an error
// that says so.
func newExporter(agent string, cli *clientv3.Client, tlsConfig *tls.Config, st store.Store, log *slog.Logger) (*export.Exporter, error) {
	cfg := export.Config{Agent: agent, Client: cli, TLS: tlsConfig, Log: log}
	if images, ok := st.(export.Images); ok {
		cfg.Images = images
	}
	return export.New(cfg)
}
