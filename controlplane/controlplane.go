// Package controlplane assembles one control-plane member: the embedded
// etcd member, the API server (gRPC, with its watch cache and its member
// registration) and the controllers, which run only while this member is
// the elected leader. Run starts them in that order and stops them in the
// reverse one.
package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/leader"
	"github.com/sanboot/sanboot/controlplane/member"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/controlplane/staging"
)

// DefaultAPIListen is the default of --api-listen.
const DefaultAPIListen = api.DefaultAPIAddress

// Config is a control-plane member's configuration.
type Config struct {
	Member member.Config
	// APIListen is the gRPC API's host:port (--api-listen).
	APIListen string
	// UploadDir is where image uploads are staged until the agents have
	// fetched them (default <Member.DataDir>/uploads).
	UploadDir string
	// UploadTTL is how long a staged upload that no image refers to is
	// kept (default apiserver.DefaultUploadTTL, 24h).
	UploadTTL time.Duration
	Log       *slog.Logger
}

// DefaultConfig is what the flags default to.
func DefaultConfig() Config {
	return Config{Member: member.DefaultConfig(), APIListen: DefaultAPIListen}
}

// Run runs the member until ctx ends (then shuts down cleanly and returns
// nil) or a part fails.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	cfg.Member.Log = log
	if err := member.RequireLoopback("--api-listen", cfg.APIListen); err != nil {
		return err
	}
	m, err := member.Start(ctx, cfg.Member)
	if err != nil {
		return err
	}
	defer m.Close()
	cli, err := m.Client()
	if err != nil {
		return err
	}
	defer cli.Close()

	uploads, err := openUploads(cfg, log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return fmt.Errorf("--api-listen %s: %w", cfg.APIListen, err)
	}
	api := apiserver.New(cli, apiserver.Config{Log: log, Member: m.Name(), Uploads: uploads, UploadTTL: cfg.UploadTTL})
	gs := grpc.NewServer(apiserver.ServerOptions(log)...)
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
	wg.Go(func() { api.Run(ctx) })
	wg.Go(func() {
		apiserver.RegisterMember(ctx, cli, &sanbootv1.Member{
			Name:         m.Name(),
			ApiEndpoints: []string{lis.Addr().String()},
			ClientUrls:   m.ClientURLs(),
			Version:      version(),
		}, apiserver.MemberTTL, log)
	})
	wg.Go(func() {
		leader.Run(ctx, cli, leader.Config{Name: m.Name(), Log: log}, func(ctx context.Context) error {
			return scheduler.New(cli, scheduler.Config{Log: log}).Run(ctx)
		})
	})
	wg.Go(func() {
		if err := gs.Serve(lis); err != nil {
			fail(fmt.Errorf("API server: %w", err))
		}
	})
	go func() {
		select {
		case err := <-m.Err():
			fail(fmt.Errorf("etcd member: %w", err))
		case <-ctx.Done():
		}
	}()

	<-ctx.Done()
	log.Info("shutting down")
	health.Shutdown()
	stopGRPC(gs, 5*time.Second)
	cancel()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
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

// version is the main module's version as the build recorded it.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
