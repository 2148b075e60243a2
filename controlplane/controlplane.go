// Package controlplane assembles one control-plane member: the embedded
// etcd member, its one watch of etcd (package informer, which the parts
// below read), the API server (gRPC, with its watch cache and its member
// registration), the boot server and the controllers, which run only
// while this member is the elected leader. Run starts them in that order
// and stops them in the reverse one.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/boot"
	"github.com/sanboot/sanboot/controlplane/etcdauth"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/leader"
	"github.com/sanboot/sanboot/controlplane/member"
	"github.com/sanboot/sanboot/controlplane/migrate"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/internal/buildinfo"
	"github.com/sanboot/sanboot/internal/kv"
)

// DefaultAPIListen is the default of --api-listen.
const DefaultAPIListen = api.DefaultAPIAddress

// DefaultBootListen is the default of --boot-listen.
const DefaultBootListen = "127.0.0.1:8080"

// Config is a control-plane member's configuration.
type Config struct {
	Member member.Config
	// APIListen is the gRPC API's host:port (--api-listen).
	APIListen string
	// APIAdvertise are the host:port addresses agents and other members
	// reach the API at (--advertise-api; default: APIListen, which must
	// then name a host).
	APIAdvertise []string
	// UploadDir is where image uploads are staged until the agents have
	// fetched them (default <Member.DataDir>/uploads).
	UploadDir string
	// UploadTTL is how long a staged upload that no image refers to is
	// kept (default staging.DefaultUploadTTL, 24h).
	UploadTTL time.Duration
	// BootListen is the boot server's host:port (--boot-listen); empty:
	// no boot server. Boot is how its scripts refer to it and whether
	// they need tokens (Boot.Listen is set from BootListen).
	BootListen string
	Boot       boot.Settings
	// BootInsecureCHAP lets a boot server beyond loopback serve CHAP
	// credentials without boot tokens (--boot-insecure-chap): whoever
	// reaches it can read any node's credentials. It warns at start.
	BootInsecureCHAP bool
	Log              *slog.Logger
	// Metrics, if set, receives the member's Prometheus metrics (see
	// metrics.go); the embedded etcd's own go to prometheus's default
	// registry, as etcd registers them there.
	Metrics prometheus.Registerer
	// OnReady, if set, is called once when the member serves: its etcd
	// member is ready and the API has answered a health check over its
	// listener (systemd's READY=1).
	OnReady func()
}

// DefaultConfig is what the flags default to.
func DefaultConfig() Config {
	return Config{Member: member.DefaultConfig(), APIListen: DefaultAPIListen, BootListen: DefaultBootListen}
}

// Run runs the member until ctx ends (then shuts down cleanly and returns
// nil) or a part fails.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	cfg.Member.Log = log
	secure := cfg.Member.Secure()
	if !secure {
		if err := member.RequireLoopback("--api-listen", cfg.APIListen); err != nil {
			return err
		}
	}
	if err := checkBootListen(cfg, log); err != nil {
		return err
	}
	if err := cfg.Boot.Validate(); err != nil {
		return err
	}
	m, err := member.Start(ctx, cfg.Member)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.AwaitVoter(ctx); err != nil {
		return err
	}
	cli, err := m.Client()
	if err != nil {
		return err
	}
	closeCli := sync.OnceFunc(func() { cli.Close() })
	defer closeCli()

	if secure {
		// With mutual TLS, etcd itself confines each client to its
		// certificate's user (package etcdauth).
		if err := etcdauth.Enable(ctx, cli, m.Name(), cfg.Member.Cluster.Names()...); err != nil {
			return fmt.Errorf("etcd authorization: %w; a member that joins a running cluster needs its etcd user: add it with sanbootctl member add", err)
		}
		log.Info("etcd authorization on: agents use etcd once enrolled (sanbootctl agents enroll NAME)")
	}
	// Records an older release wrote move to the current key layout
	// before anything reads them.
	if err := migrateKeys(ctx, cli, log); err != nil {
		return err
	}
	uploads, err := openUploads(cfg, log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return fmt.Errorf("--api-listen %s: %w", cfg.APIListen, err)
	}
	var bootLis net.Listener
	if cfg.BootListen != "" {
		if bootLis, err = net.Listen("tcp", cfg.BootListen); err != nil {
			lis.Close()
			return fmt.Errorf("--boot-listen %s: %w", cfg.BootListen, err)
		}
		cfg.Boot.Listen = bootLis.Addr().String()
	}
	advertised := cfg.APIAdvertise
	if len(advertised) == 0 {
		advertised = []string{member.LocalAddr(lis.Addr().String())}
		if host, _, _ := net.SplitHostPort(cfg.APIListen); host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
			log.Warn("--api-listen has no host: agents are told to reach the API on loopback; set --advertise-api", "api-listen", cfg.APIListen)
		}
	}
	// One watch of etcd feeds the API's cache, the boot server and the
	// scheduler (while this member leads).
	inf := informer.New(cli, log)
	api := apiserver.New(cli, apiserver.Config{Log: log, Member: m.Name(), Uploads: uploads, UploadTTL: cfg.UploadTTL, Boot: cfg.Boot,
		EtcdAuth: secure, Informer: inf, HasLeader: m.HasLeader, LeaderWait: 3 * m.Raft().ElectionTimeoutDuration()})
	opts := apiserver.ServerOptions(log)
	var clientTLS *tls.Config // the member's, for its own readiness check
	if secure {
		serverTLS, err := cfg.Member.Client.TLS.Server()
		if err != nil {
			lis.Close()
			return fmt.Errorf("API TLS: %w", err)
		}
		if clientTLS, err = m.ClientTLS(); err != nil {
			lis.Close()
			return fmt.Errorf("API TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
		log.Info("API: mutual TLS; clients present a certificate of the CA", "trusted-ca-file", cfg.Member.Client.TLS.TrustedCAFile)
	} else {
		log.Warn("API: insecure mode (no TLS): listening on loopback only; configure --cert-file, --key-file and --trusted-ca-file to serve the network")
	}
	var sched schedulerMetrics
	if cfg.Metrics != nil {
		if err := api.RegisterMetrics(cfg.Metrics); err != nil {
			return fmt.Errorf("register the API's metrics: %w", err)
		}
		if err := sched.register(cfg.Metrics); err != nil {
			return fmt.Errorf("register the scheduler's metrics: %w", err)
		}
		if err := cfg.Metrics.Register(api.MembersCollector()); err != nil {
			return fmt.Errorf("register the members' metrics: %w", err)
		}
		opts = append(opts, api.MetricsServerOptions()...)
	}
	// After authorization: a leaderless member refuses calls (an
	// unauthorized caller hears that first).
	opts = append(opts, api.LeaderServerOptions()...)
	gs := grpc.NewServer(opts...)
	health := api.Register(gs)
	log.Info("API serving", "addr", lis.Addr().String())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	wg.Go(func() { inf.Run(ctx) })
	wg.Go(func() { api.Run(ctx) })
	if bootLis != nil {
		wg.Go(func() {
			if err := boot.NewServer(cli, boot.Config{Settings: cfg.Boot, Log: log, Informer: inf}).Run(ctx, bootLis); err != nil {
				fail(err)
			}
		})
	}
	wg.Go(func() {
		apiserver.RegisterMember(ctx, cli, &sanbootv1.Member{
			Name:         m.Name(),
			ApiEndpoints: advertised,
			ClientUrls:   m.ClientURLs(),
			Version:      buildinfo.Version(),
			BootUrl:      bootURL(cfg),
		}, apiserver.MemberTTL, log)
	})
	wg.Go(func() {
		leader.Run(ctx, cli, leader.Config{Name: m.Name(), Log: log, Probe: probeMember(cli)}, func(ctx context.Context, fence kv.Fence) error {
			s := scheduler.New(cli, scheduler.Config{Log: log, OnRetry: sched.retried, Fence: fence, Informer: inf})
			sched.current.Store(s)
			defer sched.current.CompareAndSwap(s, nil)
			return s.Run(ctx)
		})
	})
	wg.Go(func() {
		if err := gs.Serve(lis); err != nil {
			fail(fmt.Errorf("API server: %w", err))
		}
	})
	if cfg.OnReady != nil {
		wg.Go(func() {
			if err := awaitServing(ctx, member.LocalAddr(lis.Addr().String()), clientTLS); err != nil {
				if ctx.Err() == nil {
					fail(err)
				}
				return
			}
			log.Info("serving", "api", lis.Addr().String())
			cfg.OnReady()
		})
	}
	go func() {
		select {
		case err := <-m.Err():
			fail(fmt.Errorf("etcd member: %w", err))
		case <-m.Stopped():
			// etcd stops a member removed from the cluster (sanbootctl
			// member remove). As etcd does, the process then ends with
			// success: a restart would be removed again, and until it
			// ends its API would answer every call with "raft: stopped".
			select {
			case err := <-m.Err():
				fail(fmt.Errorf("etcd member: %w", err))
			default:
				log.Warn("this member's etcd stopped by itself: it was removed from the cluster; stopping (delete its --data-dir before it joins again)")
				cancel()
			}
		case <-ctx.Done():
		}
	}()

	<-ctx.Done()
	log.Info("shutting down")
	health.Shutdown()
	stopGRPC(gs, 5*time.Second)
	cancel()
	if !waitGroup(&wg, stopGrace) {
		// A part may wait on etcd with the client's own context (the
		// etcd election library resigns so when its campaign is
		// cancelled), which never ends while etcd has no leader:
		// closing the client ends those calls.
		log.Warn("parts still stopping (etcd has no leader?): closing the etcd client", "after", stopGrace)
		closeCli()
		wg.Wait()
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// checkBootListen: the boot server speaks plain HTTP (iPXE fetches scripts
// so). On loopback it may serve anything; beyond loopback a node's CHAP
// credentials go only to a URL with the node's boot token (--boot-tokens),
// unless the operator asks for the old behaviour by name.
func checkBootListen(cfg Config, log *slog.Logger) error {
	if cfg.BootListen == "" || member.RequireLoopback("--boot-listen", cfg.BootListen) == nil {
		return nil
	}
	switch {
	case cfg.Boot.Tokens:
		log.Info("boot server beyond loopback: a node's script and CHAP credentials only with its boot token", "boot-listen", cfg.BootListen)
		return nil
	case cfg.BootInsecureCHAP:
		log.Warn("boot server beyond loopback WITHOUT boot tokens (--boot-insecure-chap): whoever reaches it can read every node's CHAP credentials; use --boot-tokens", "boot-listen", cfg.BootListen)
		return nil
	}
	return fmt.Errorf("--boot-listen %s is beyond loopback: give --boot-tokens, so that a node's CHAP credentials are served only with its one-time boot token (sanbootctl boot-script NODE --url), "+
		"or --boot-insecure-chap to serve them to anyone who asks (not recommended)", cfg.BootListen)
}

// probeMember asks the etcd member called name for its status: the
// controllers' leader runs in the same process as its etcd member, so a
// leader whose member does not answer is dead or cut off (leader.Config.Probe).
//
// It reads the member list from this member's own etcd (serializable), so
// that it answers while etcd elects a raft leader (the dead member may have
// led it): probes count from the kill, not from the end of that election.
// Each of the member's client URLs is first dialled over TCP: a refused
// connection (the process is gone) fails the probe at once, where etcd's
// Status call would wait for a connection until the probe's deadline.
func probeMember(cli *clientv3.Client) func(ctx context.Context, name string) error {
	return func(ctx context.Context, name string) error {
		ml, err := cli.MemberList(ctx, clientv3.WithSerializable())
		if err != nil {
			return nil // this member cannot tell; it does not depose
		}
		for _, m := range ml.Members {
			if m.Name != name {
				continue
			}
			var errs []error
			for _, u := range m.ClientURLs {
				err := reachable(ctx, u)
				if err == nil {
					if _, err = cli.Status(ctx, u); err == nil {
						return nil
					}
				}
				errs = append(errs, err)
			}
			return fmt.Errorf("member %s does not answer: %w", name, errors.Join(errs...))
		}
		return fmt.Errorf("%q is not a member of the cluster", name)
	}
}

// reachable dials the host:port of an etcd client URL over TCP and hangs
// up. Other URLs (unix sockets) count as reachable: Status tells.
func reachable(ctx context.Context, clientURL string) error {
	u, err := url.Parse(clientURL)
	if err != nil || u.Host == "" || u.Scheme == "unix" || u.Scheme == "unixs" {
		return nil
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	return c.Close()
}

// bootURL is the base URL other members' boot scripts fall back to: --boot-url,
// else http://--boot-listen when it names a host; empty without a boot
// server.
func bootURL(cfg Config) string {
	switch {
	case cfg.BootListen == "":
		return ""
	case cfg.Boot.URL != "":
		return cfg.Boot.URL
	}
	if host, _, err := net.SplitHostPort(cfg.Boot.Listen); err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		return ""
	}
	return "http://" + cfg.Boot.Listen
}

// openUploads opens the upload staging directory: cfg.UploadDir, else
// uploads/ in the member's data directory.
func openUploads(cfg Config, log *slog.Logger) (*staging.Area, error) {
	dir := cfg.UploadDir
	if dir == "" {
		dir = filepath.Join(cfg.Member.DataDir, "uploads")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("upload directory: %w", err)
	}
	return staging.Open(dir, staging.Options{Log: log})
}

// stopGrace bounds how long the parts of a stopping member may use etcd.
const stopGrace = 10 * time.Second

// waitGroup waits for wg up to d; false if it had not finished.
func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// stopGRPC lets RPCs in flight finish for up to grace, then cuts them.
// Watch streams end at once: their cache stops with the context.
func stopGRPC(gs *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		gs.Stop()
		<-done
	}
}

// migrateKeys runs the key layout migration, again after a failure (a
// leader election just after a member joins answers "leader changed"), for
// about a minute before it gives up.
func migrateKeys(ctx context.Context, cli *clientv3.Client, log *slog.Logger) error {
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := migrate.Run(ctx, cli, log)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt == 8 {
			return fmt.Errorf("key layout migration: %w", err)
		}
		log.Warn("key layout migration failed; trying again", "attempt", attempt, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("key layout migration: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 15*time.Second)
	}
}
