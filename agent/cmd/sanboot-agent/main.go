// Command sanboot-agent runs on a storage host: it registers itself in etcd
// under a lease, watches its own assignments and the image specs, and makes
// its store and iSCSI target match them. It never listens for commands:
// it opens every connection itself. See agent/README.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	agentmetrics "github.com/sanboot/sanboot/agent/metrics"
	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/agent/target/lio"
	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/buildinfo"
	"github.com/sanboot/sanboot/internal/bytesize"
	"github.com/sanboot/sanboot/internal/daemon"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if len(os.Args) > 1 && os.Args[1] == "lio" { // sanboot-agent lio dump: see lio.go
		run = func(ctx context.Context, args []string, stderr io.Writer) error {
			return runLIO(ctx, args[1:], os.Stdout, stderr)
		}
	}
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "sanboot-agent:", err)
		os.Exit(2)
	}
}

type config struct {
	name             string
	endpoints        []string
	driver           string
	storeDir         string
	storeKind        string // file or rbd
	ceph             cephConfig
	portals          []string
	advertisePortals []string
	leaseTTL         time.Duration
	resyncInterval   time.Duration
	workers          int
	fakeCapacity     int64
	tgtd             string
	tgtdControl      int
	configfsRoot     string
	tls              tlsconfig.Files // --cert, --key, --cacert: to etcd and to the API
	common           daemon.Common   // --config, --log-format, --log-level, --metrics-listen
}

// listFlag is a repeatable flag.
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string   { return strings.Join(l.vals, ",") }
func (l *listFlag) Repeatable() bool { return true } // a YAML list in --config
func (l *listFlag) Set(s string) error {
	if !l.set {
		l.vals, l.set = nil, true // the first use replaces the default
	}
	l.vals = append(l.vals, s)
	return nil
}

func parseFlags(args []string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("sanboot-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		c         config
		endpoints string
		capacity  string
		portals   = listFlag{vals: []string{"127.0.0.1:3260"}}
		advertise listFlag
	)
	fs.StringVar(&c.name, "name", "", "this agent's name, a DNS label unique among agents (required; with --cert, default and must be its CN)")
	fs.StringVar(&endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "etcd client URLs of one or more control-plane members, comma separated (the client fails over between them and finds the cluster's other members itself): https:// with --cert, else http:// on loopback")
	fs.StringVar(&c.tls.CertFile, "cert", "", "the agent's certificate (sanbootctl pki issue agent NAME), presented to etcd and to the API")
	fs.StringVar(&c.tls.KeyFile, "key", "", "private key of --cert")
	fs.StringVar(&c.tls.TrustedCAFile, "cacert", "", "CA that etcd's and the API's certificates must be signed by")
	fs.StringVar(&c.driver, "driver", "", "iSCSI target driver: "+availableDrivers+" (an in-memory stand-in for tests); default lio when --configfs-root exists, else required")
	fs.StringVar(&c.configfsRoot, "configfs-root", lio.DefaultRoot, "with --driver=lio: LIO's configfs directory")
	fs.StringVar(&c.storeKind, "store", storeFile, "where images and node disks live: file (files in --store-dir) or rbd (RBD images in --rbd-pool of a Ceph cluster, served with --driver=tgt; agents sharing a pool share its disks)")
	fs.StringVar(&c.storeDir, "store-dir", "/var/lib/sanboot", "with --store=file: where images and node disks live; XFS with reflink=1 or btrfs clone in constant time (the fake store keeps nothing there)")
	c.ceph.addFlags(fs)
	fs.StringVar(&c.tgtd, "tgtd", tgtdManaged, "with --driver=tgt: managed (run a private tgtd on --portal, stopped with the agent) or system (use a tgtd that runs as its own service)")
	fs.IntVar(&c.tgtdControl, "tgtd-control", -1, "tgtd control socket number (tgtadm -C); default 0 with --tgtd=system, 3260 with --tgtd=managed")
	fs.Var(&portals, "portal", "ADDR:PORT targets listen on (repeatable)")
	fs.Var(&advertise, "advertise-portal", "ADDR:PORT nodes are told to use, when it differs from --portal (NAT, VM; repeatable)")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", 10*time.Second, "TTL of the registration lease: how long after a crash the agent shows Unavailable")
	fs.DurationVar(&c.resyncInterval, "resync-interval", time.Minute, "interval of full resyncs (desired in etcd vs actual store and targets)")
	fs.IntVar(&c.workers, "workers", 8, "nodes and images worked on at once")
	fs.StringVar(&capacity, "fake-capacity", "1TiB", "size the fake store pretends to have (--driver=fake)")
	c.common.AddFlags(fs, daemon.DefaultAgentMetrics)
	if err := daemon.Parse(fs, args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: every setting is a flag; see --help", fs.Args())
	}
	c.portals, c.advertisePortals = portals.vals, advertise.vals

	var errs []error
	if err := c.tls.Check(tlsconfig.ClientNames); err != nil {
		errs = append(errs, err)
	} else if c.tls.Enabled() {
		errs = append(errs, checkAgentCert(c.tls.CertFile, &c.name))
	}
	if err := api.ValidateName("--name", c.name); err != nil {
		errs = append(errs, err)
	}
	if c.driver == "" {
		c.driver = defaultDriver(c.configfsRoot)
	}
	switch c.driver {
	case "fake", "tgt", "lio":
	case "":
		errs = append(errs, fmt.Errorf("--driver is required: no LIO at %s (modprobe iscsi_target_mod makes it), so no default: available drivers: %s", c.configfsRoot, availableDrivers))
	default:
		errs = append(errs, fmt.Errorf("--driver=%q is unknown: available drivers: %s", c.driver, availableDrivers))
	}
	if !filepath.IsAbs(c.configfsRoot) {
		errs = append(errs, fmt.Errorf("--configfs-root=%q: use an absolute path such as %s", c.configfsRoot, lio.DefaultRoot))
	}
	switch c.tgtd {
	case tgtdManaged:
		if c.tgtdControl == -1 {
			c.tgtdControl = 3260
		}
		if c.tgtdControl < 1 || c.tgtdControl > tgt.MaxControlPort {
			errs = append(errs, fmt.Errorf("--tgtd-control=%d: a managed tgtd takes 1 to %d (0 is the system tgtd's)", c.tgtdControl, tgt.MaxControlPort))
		}
	case tgtdSystem:
		if c.tgtdControl == -1 {
			c.tgtdControl = 0
		}
		if c.tgtdControl < 0 || c.tgtdControl > tgt.MaxControlPort {
			errs = append(errs, fmt.Errorf("--tgtd-control=%d: use 0 to %d", c.tgtdControl, tgt.MaxControlPort))
		}
	default:
		errs = append(errs, fmt.Errorf("--tgtd=%q: use managed or system", c.tgtd))
	}
	for e := range strings.SplitSeq(endpoints, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		u, err := url.Parse(e)
		switch {
		case err != nil || u.Host == "" || u.Path != "" && u.Path != "/":
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q is not a URL such as http://127.0.0.1:2379", e))
		case u.Scheme == "https" && !c.tls.Enabled():
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q: https needs --cert, --key and --cacert", e))
		case u.Scheme == "http" && c.tls.Enabled():
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q: with --cert, use https://", e))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q: use https:// (with --cert) or http://", e))
		default:
			c.endpoints = append(c.endpoints, e)
		}
	}
	if len(c.endpoints) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("--etcd-endpoints is empty: give at least one URL such as http://127.0.0.1:2379"))
	}
	errs = append(errs, c.validateStore())
	if !filepath.IsAbs(c.storeDir) || filepath.Clean(c.storeDir) != c.storeDir {
		errs = append(errs, fmt.Errorf("--store-dir=%q: use an absolute, clean path such as /var/lib/sanboot", c.storeDir))
	} else if fi, err := os.Stat(c.storeDir); err == nil && !fi.IsDir() {
		errs = append(errs, fmt.Errorf("--store-dir=%q is not a directory", c.storeDir))
	}
	errs = append(errs, checkPortals("--portal", c.portals, true), checkPortals("--advertise-portal", c.advertisePortals, false))
	if c.leaseTTL < 2*time.Second || c.leaseTTL > time.Hour {
		errs = append(errs, fmt.Errorf("--lease-ttl=%v: use 2s to 1h (etcd's minimum is about 2s)", c.leaseTTL))
	}
	if c.resyncInterval < time.Second {
		errs = append(errs, fmt.Errorf("--resync-interval=%v: use at least 1s", c.resyncInterval))
	}
	if c.workers < 1 || c.workers > 1024 {
		errs = append(errs, fmt.Errorf("--workers=%d: use 1 to 1024", c.workers))
	}
	size, err := bytesize.Parse(capacity)
	if err != nil {
		errs = append(errs, fmt.Errorf("--fake-capacity: %w", err))
	}
	c.fakeCapacity = size
	if _, err := c.common.Logger(io.Discard); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
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

// checkAgentCert reads the identity of the agent's certificate: it must
// be an agent's, and its CN is the agent's name (name defaults to it).
func checkAgentCert(path string, name *string) error {
	cert, err := pki.ReadCert(path)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	if id.Role != pki.RoleAgent {
		return fmt.Errorf("--cert %s is a %s's certificate (%s): an agent needs one from sanbootctl pki issue agent NAME", path, id.Role, id.Name)
	}
	if *name == "" {
		*name = id.Name
	} else if *name != id.Name {
		return fmt.Errorf("--name %q differs from the certificate's name %q (--cert %s): drop --name or issue a certificate for %q", *name, id.Name, path, *name)
	}
	return nil
}

func checkPortals(flagName string, portals []string, required bool) error {
	if required && len(portals) == 0 {
		return fmt.Errorf("%s: give at least one ADDR:PORT", flagName)
	}
	var errs []error
	seen := map[string]bool{}
	for _, p := range portals {
		if err := api.ValidatePortal(flagName, p); err != nil {
			errs = append(errs, err)
		} else if seen[p] {
			errs = append(errs, fmt.Errorf("%s: %s is given twice", flagName, p))
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

// run is the whole program; it returns when ctx ends (after revoking the
// lease) or when the flags are wrong.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := c.common.Logger(stderr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metricsReg := prometheus.WrapRegistererWith(prometheus.Labels{"agent": c.name}, reg)
	var tlsConfig *tls.Config
	if c.tls.Enabled() {
		if tlsConfig, err = c.tls.Client(); err != nil {
			return err
		}
	}
	// Several members: the client balances over them and fails over on its
	// own; keepalive pings notice a member cut off from the network, and
	// the endpoint list follows the cluster's members (AutoSync), so an
	// agent given one member still finds the others.
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: tlsConfig,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second, AutoSyncInterval: time.Minute})
	if err != nil {
		return fmt.Errorf("etcd client for %v: %w", c.endpoints, err)
	}
	defer cli.Close()
	if tlsConfig != nil {
		if err := checkEnrolled(ctx, cli, c.name); err != nil {
			return err
		}
	}
	// The file store fetches upload sources from the control plane, url
	// sources over HTTP (see imageio.go).
	b, err := openBackends(ctx, c, newFetcher(cli, tlsConfig, log).Open, log)
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

	log.Info("starting", "agent", c.name, "version", buildinfo.Version(), "etcd", c.endpoints, "driver", c.driver,
		"portals", c.portals, "advertise", c.advertisePortals)
	if tlsConfig != nil {
		log.Info("mutual TLS to etcd and the API", "cert", c.tls.CertFile, "cacert", c.tls.TrustedCAFile)
	} else {
		log.Warn("insecure mode: the connections to etcd and the API are not encrypted nor authenticated; give --cert, --key and --cacert beyond one host")
	}

	// An agent whose disks other agents can serve (a storage domain)
	// fences itself while its lease is lost: see reconciler.Fence.
	fence := func(bool) {}
	var onLost, onRegistered func()
	if domain := storageDomain(st); domain != "" {
		onLost, onRegistered = func() { fence(true) }, func() { fence(false) }
	}
	registration, err := registry.New(cli, registry.Config{
		Name: c.name, Version: buildinfo.Version(), Driver: drv.Name(),
		Portals: c.portals, AdvertisePortals: c.advertisePortals, CloneMode: string(st.CloneMode()),
		StoreKind: b.storeKind, StorageDomain: storageDomain(st), OnLost: onLost, OnRegistered: onRegistered,
		TTL: c.leaseTTL, Log: log,
		// LIO lives in the kernel and a system tgtd in its own service:
		// their targets outlive the agent; a managed tgtd's do not.
		TargetsOutlive: c.driver == "lio" || c.driver == "tgt" && c.tgtd == tgtdSystem,
		Capacity: func(ctx context.Context) (int64, int64, error) {
			cp, err := st.Capacity(ctx)
			return cp.CapacityBytes, cp.FreeBytes, err
		},
	})
	if err != nil {
		return err
	}
	var onRetry func(string)
	rec, err := reconciler.New(reconciler.Config{
		Agent: c.name, Client: cli, Store: st, Driver: drv,
		Portals: c.portals, AdvertisePortals: c.advertisePortals,
		Workers: c.workers, ResyncInterval: c.resyncInterval, Log: log, SharedStore: storageDomain(st) != "",
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
	if err := agentmetrics.Store(metricsReg, func(ctx context.Context) (int64, int64, error) {
		cp, err := st.Capacity(ctx)
		return cp.CapacityBytes, cp.FreeBytes, err
	}); err != nil {
		return err
	}
	exp, err := newExporter(c.name, cli, tlsConfig, st, log)
	if err != nil {
		return err
	}
	svc, err := startService(ctx, c.common.MetricsListen, reg, registration, rec, log)
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
