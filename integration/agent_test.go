package integration_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sanboot/sanboot/agent/export"
	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/agent/store"
	fakestore "github.com/sanboot/sanboot/agent/store/fake"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
	"github.com/sanboot/sanboot/internal/cptest"
)

// agentConfig is one agent, wired as sanboot-agent wires it with the fake
// target driver.
type agentConfig struct {
	name   string
	cli    *clientv3.Client
	store  store.Store
	images export.Images // nil: no exports (the fake store keeps no bytes)
	ttl    time.Duration
	log    *slog.Logger
}

// runAgent runs the agent's registry, reconciler and exporter in wg until
// ctx ends.
func runAgent(t *testing.T, ctx context.Context, wg *sync.WaitGroup, c agentConfig) {
	t.Helper()
	reg, err := registry.New(c.cli, registry.Config{Name: c.name, Driver: "fake", Portals: []string{"127.0.0.1:3260"}, TTL: c.ttl, Log: c.log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reconciler.New(reconciler.Config{Agent: c.name, Client: c.cli, Store: c.store, Driver: faketarget.New(),
		Portals: []string{"127.0.0.1:3260"}, RetryBase: 100 * time.Millisecond, RetryMax: time.Second, Log: c.log})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { reg.Run(ctx) })
	wg.Go(func() { rec.Run(ctx) })
	if c.images != nil {
		exp, err := export.New(export.Config{Agent: c.name, Client: c.cli, Images: c.images, Log: c.log})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { exp.Run(ctx) })
	}
}

// fakeAgent is an agent run in-process as `sanboot-agent --driver=fake`
// runs: the FAKE in-memory store and target driver, its own etcd client.
type fakeAgent struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// startFakeAgent starts agent name on the etcd at endpoints, with a lease
// of ttl; it stops (gracefully) at the end of the test.
func startFakeAgent(t *testing.T, endpoints []string, name string, ttl time.Duration) *fakeAgent {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := fakestore.New(fakestore.Options{Root: t.TempDir(), CapacityBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &fakeAgent{cli: cli, cancel: cancel}
	runAgent(t, ctx, &a.wg, agentConfig{name: name, cli: cli, store: st, ttl: ttl, log: cptest.Log(t).With("agent", name)})
	t.Cleanup(a.stop)
	return a
}

// stop stops the agent as SIGTERM does: its lease is revoked.
func (a *fakeAgent) stop() {
	a.once.Do(func() {
		a.cancel()
		a.wg.Wait()
		a.cli.Close()
	})
}

// crash stops the agent as kill -9 does: its etcd connection goes first,
// so nothing is revoked or written on the way out, and its lease expires
// after its TTL.
func (a *fakeAgent) crash() {
	a.once.Do(func() {
		a.cli.Close()
		a.cancel()
		a.wg.Wait()
	})
}
