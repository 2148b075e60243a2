// Package cptest starts a control plane for a test, the one way tests do
// it. Two sizes:
//
//   - StartAPI: a real etcd member (etcdtest), an API server on a loopback
//     port with its gRPC server and a client connection, and, as asked, the
//     scheduler and the member registration agents look up. For tests of
//     the API, of what talks to it (agents fetching uploads, sanbootctl),
//     and of the system in-process.
//   - MemberConfig and RunMember: the whole member as sanboot-controlplane
//     runs it (controlplane.Run: embedded etcd, API, boot server, elected
//     scheduler), returning once it serves.
//
// Everything listens on loopback with free ports and stops when the test
// ends.
package cptest

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// Log is a logger that writes warnings and errors to the test's output
// (none for a benchmark).
func Log(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Options says what StartAPI runs besides etcd and the API server.
type Options struct {
	// Config is the API server's; a nil Log is Log(t).
	Config apiserver.Config
	// Scheduler runs a scheduler on the same etcd.
	Scheduler bool
	// NoLoops leaves the API server's loops (its watch cache, the upload
	// collector) stopped, for a test that drives them itself.
	NoLoops bool
	// Register registers the API server as control-plane member
	// Config.Member (agents find its address there), advertising the
	// server's own address, or what Advertise makes of it (a proxy in
	// front of it). StartAPI returns once the registration is in etcd.
	Register  bool
	Advertise func(addr string) string
	// EtcdProxy puts an etcdtest.Proxy between the API server and etcd
	// (API.Proxy), to cut the API server off; the scheduler and the
	// test's client reach etcd directly.
	EtcdProxy bool
	// GRPC are the gRPC server's options; nil means
	// apiserver.ServerOptions and the server's LeaderServerOptions, as
	// the member uses.
	GRPC []grpc.ServerOption
}

// API is a running API server.
type API struct {
	Etcd   *etcdtest.Member
	Client *clientv3.Client // the test's, straight to etcd
	Proxy  *etcdtest.Proxy  // with Options.EtcdProxy
	Server *apiserver.Server
	Addr   string           // the gRPC server's
	Conn   *grpc.ClientConn // to Addr, insecure
	API    sanbootv1.SanbootClient
	// Ctx ends when the test does.
	Ctx context.Context
	Log *slog.Logger
}

// StartAPI starts etcd and an API server with what o asks for; all of it
// stops when the test ends.
func StartAPI(t testing.TB, o Options) *API {
	t.Helper()
	m := etcdtest.Start(t)
	a := &API{Etcd: m, Client: m.Client(t), Log: o.Config.Log}
	if a.Log == nil {
		a.Log = Log(t)
	}
	cfg := o.Config
	cfg.Log = a.Log
	srvCli := a.Client
	if o.EtcdProxy {
		a.Proxy = etcdtest.NewProxy(t, strings.TrimPrefix(m.Endpoints[0], "http://"))
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + a.Proxy.Addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		srvCli = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// The API server and the scheduler each follow etcd with a watch of
	// their own (a member shares one: controlplane.Run), so that a test
	// can hold the API's back (CacheHold) while the scheduler goes on.
	a.Server = apiserver.New(srvCli, cfg)
	gopts := o.GRPC
	if gopts == nil {
		gopts = append(apiserver.ServerOptions(a.Log), a.Server.LeaderServerOptions()...)
	}
	gs := grpc.NewServer(gopts...)
	a.Server.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.Addr = lis.Addr().String()

	a.Ctx = ctx
	wg.Go(func() { gs.Serve(lis) })
	if !o.NoLoops {
		wg.Go(func() { a.Server.Run(ctx) })
	}
	if o.Scheduler {
		wg.Go(func() { scheduler.New(a.Client, scheduler.Config{Log: a.Log}).Run(ctx) })
	}
	if o.Register {
		advertised := a.Addr
		if o.Advertise != nil {
			advertised = o.Advertise(a.Addr)
		}
		wg.Go(func() {
			apiserver.RegisterMember(ctx, a.Client, &sanbootv1.Member{Name: cfg.Member, ApiEndpoints: []string{advertised}}, 10, a.Log)
		})
	}
	a.Conn, err = grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	a.API = sanbootv1.NewSanbootClient(a.Conn)
	t.Cleanup(func() {
		a.Conn.Close()
		cancel()
		gs.Stop()
		wg.Wait()
	})
	if o.Register {
		eventually.True(t, "member "+cfg.Member+" to register", func() bool {
			r, err := a.Client.Get(ctx, api.MemberKey(cfg.Member), clientv3.WithCountOnly())
			return err == nil && r.Count == 1
		})
	}
	return a
}

// MemberConfig is a member named name on loopback: etcd and the API on
// free ports, data in a temporary directory, no boot server, warnings
// logged to the test.
func MemberConfig(t testing.TB, name string) controlplane.Config {
	cfg := controlplane.DefaultConfig()
	cfg.Member.Name = name
	cfg.Member.DataDir = filepath.Join(t.TempDir(), "data")
	addrs := etcdtest.FreeAddrs(t, 3)
	cfg.Member.Client.ListenURLs = []url.URL{{Scheme: "http", Host: addrs[0]}}
	cfg.Member.Peer.ListenURLs = []url.URL{{Scheme: "http", Host: addrs[1]}}
	cfg.APIListen = addrs[2]
	cfg.BootListen = ""
	cfg.Log = Log(t)
	return cfg
}

// RunMember runs controlplane.Run(cfg) and returns once the member serves
// (cfg.OnReady, which still runs first). stop ends it and returns Run's
// error; a second stop, or the test's end, does nothing more.
func RunMember(t testing.TB, cfg controlplane.Config) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	ready, onReady := make(chan struct{}), cfg.OnReady
	cfg.OnReady = func() {
		if onReady != nil {
			onReady()
		}
		close(ready)
	}
	go func() { errc <- controlplane.Run(ctx, cfg) }()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("the control plane stopped before it served: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("the control plane did not serve within 2 minutes")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(90 * time.Second):
				t.Error("controlplane.Run did not return 90 s after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}
