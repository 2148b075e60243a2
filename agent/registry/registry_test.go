package registry_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

const wait = 60 * time.Second // generous: a loaded 2-core machine

type running struct {
	reg    *registry.Registry
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cli *clientv3.Client, cfg registry.Config) *running {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "agent-1"
	}
	if cfg.TTL == 0 {
		cfg.TTL = 2 * time.Second
	}
	cfg.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	reg, err := registry.New(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- reg.Run(ctx) }()
	t.Cleanup(r.stop)
	select {
	case <-reg.Ready():
	case <-time.After(wait):
		t.Fatalf("not registered after %v", wait)
	}
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // later stops return at once
}

func aliveLease(t *testing.T, cli *clientv3.Client, name string) (int64, bool) {
	t.Helper()
	resp, err := cli.Get(context.Background(), api.AliveKey(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false
	}
	return resp.Kvs[0].Lease, true
}

func TestRegistrationAppears(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	r := start(t, cli, registry.Config{
		Name: "agent-1", Version: "v-test", Driver: "fake",
		Portals: []string{"127.0.0.1:3260"}, AdvertisePortals: []string{"10.0.2.2:3260"}, CloneMode: "fake",
		Capacity: func(context.Context) (int64, int64, error) { return 1 << 40, 1<<40 - 5, nil },
	})
	var rec sanbootv1.AgentRecord
	if _, err := kv.Get(context.Background(), cli, api.AgentKey("agent-1"), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Name != "agent-1" || rec.Driver != "fake" || rec.Version != "v-test" || rec.CloneMode != "fake" ||
		len(rec.Portals) != 1 || rec.Portals[0] != "127.0.0.1:3260" || len(rec.AdvertisePortals) != 1 ||
		rec.CapacityBytes != 1<<40 || rec.FreeBytes != 1<<40-5 || rec.StartTime == nil || rec.UpdateTime == nil {
		t.Errorf("record = %v", &rec)
	}
	lease, ok := aliveLease(t, cli, "agent-1")
	if !ok || lease == 0 || lease != int64(r.reg.Lease()) {
		t.Fatalf("alive key: lease %x present %v, registry's lease %x", lease, ok, r.reg.Lease())
	}

	// A clean stop revokes the lease: the alive key is gone when Run returns.
	r.stop()
	if _, ok := aliveLease(t, cli, "agent-1"); ok {
		t.Errorf("alive key still there after a clean stop")
	}
	if _, err := kv.Get(context.Background(), cli, api.AgentKey("agent-1"), &rec); err != nil {
		t.Errorf("the record must outlive the agent: %v", err)
	}
}

// A killed agent does not revoke: its alive key goes when the lease expires.
func TestLeaseExpiresAfterKill(t *testing.T) {
	m := etcdtest.Start(t)
	watcher := m.Client(t)
	own, err := clientv3.New(clientv3.Config{Endpoints: m.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, own, registry.Config{TTL: 2 * time.Second})
	if _, ok := aliveLease(t, watcher, "agent-1"); !ok {
		t.Fatal("alive key missing after registration")
	}
	own.Close() // the kill: no keepalive, no revoke
	r.stop()
	eventually.True(t, "alive key expires", func() bool { _, ok := aliveLease(t, watcher, "agent-1"); return !ok })
	var rec sanbootv1.AgentRecord
	if _, err := kv.Get(context.Background(), watcher, api.AgentKey("agent-1"), &rec); err != nil {
		t.Errorf("the record must outlive the agent: %v", err)
	}
}

// A lost lease (here revoked behind the agent's back) is re-granted and the
// agent registers again by itself.
func TestReRegistersAfterLeaseLoss(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	r := start(t, cli, registry.Config{TTL: 2 * time.Second})
	first := r.reg.Lease()
	if _, err := cli.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "registered again under a new lease", func() bool {
		lease, ok := aliveLease(t, cli, "agent-1")
		return ok && lease != int64(first) && lease == int64(r.reg.Lease())
	})
}

// etcd down for longer than the TTL: the agent registers again when it is back.
func TestReRegistersAfterEtcdRestart(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	r := start(t, cli, registry.Config{TTL: 2 * time.Second})
	t0 := time.Now()
	m.Stop()
	t.Logf("stop took %v", time.Since(t0))
	// The client gives the lease up once its TTL passed without a keepalive.
	eventually.True(t, "the registry to give its lease up", func() bool { return r.reg.Lease() == 0 })
	t0 = time.Now()
	m.Restart()
	t.Logf("restart took %v", time.Since(t0))
	eventually.True(t, "alive again after the etcd restart", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, api.AliveKey("agent-1"))
		if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].Lease != int64(r.reg.Lease()) {
			return false
		}
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		return err == nil && ttl.TTL > 0
	})
}

func TestRecordFollowsCapacity(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	var free, reads atomic.Int64
	free.Store(100)
	start(t, cli, registry.Config{
		UpdateInterval: 50 * time.Millisecond,
		Capacity: func(context.Context) (int64, int64, error) {
			reads.Add(1)
			return 1000, free.Load(), nil
		},
	})
	var rec sanbootv1.AgentRecord
	rev, err := kv.Get(context.Background(), cli, api.AgentKey("agent-1"), &rec)
	if err != nil || rec.FreeBytes != 100 {
		t.Fatalf("record %v, %v", &rec, err)
	}
	// Several reads of the capacity with nothing changed.
	want := reads.Load() + 3
	eventually.True(t, "three more capacity reads", func() bool { return reads.Load() >= want })
	if again, _ := kv.Get(context.Background(), cli, api.AgentKey("agent-1"), &rec); again != rev {
		t.Errorf("record rewritten (rev %d -> %d) though nothing changed", rev, again)
	}
	free.Store(42)
	eventually.True(t, "record shows the new free space", func() bool {
		_, err := kv.Get(context.Background(), cli, api.AgentKey("agent-1"), &rec)
		return err == nil && rec.FreeBytes == 42
	})
}

func TestNewRejectsBadName(t *testing.T) {
	if _, err := registry.New(nil, registry.Config{Name: "Bad_Name"}); err == nil {
		t.Fatal("accepted an invalid agent name")
	}
}

// An agent whose targets outlive it records a graceful stop before its
// lease goes (its nodes stay Ready); one whose targets die with it does
// not; registering again clears the record. A problem shows in the
// record at once.
func TestGracefulStopRecordsKeptTargets(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	read := func(name string) *sanbootv1.AgentRecord {
		var rec sanbootv1.AgentRecord
		if _, err := kv.Get(context.Background(), cli, api.AgentKey(name), &rec); err != nil {
			t.Fatal(err)
		}
		return &rec
	}
	r := start(t, cli, registry.Config{Name: "system-tgtd", TargetsOutlive: true, UpdateInterval: time.Hour})
	r.reg.SetProblem("tgtd does not answer")
	eventually.True(t, "the problem in the record", func() bool { return read("system-tgtd").Problem == "tgtd does not answer" })
	r.reg.SetProblem("")
	eventually.True(t, "the problem gone from the record", func() bool { return read("system-tgtd").Problem == "" })
	r.stop()
	if rec := read("system-tgtd"); !rec.TargetsKept || rec.StopTime == nil {
		t.Errorf("after a graceful stop with targets that outlive the agent: %v", rec)
	}
	start(t, cli, registry.Config{Name: "system-tgtd", TargetsOutlive: true})
	if rec := read("system-tgtd"); rec.TargetsKept || rec.StopTime != nil {
		t.Errorf("registered again, the record still says stopped: %v", rec)
	}

	r = start(t, cli, registry.Config{Name: "managed-tgtd"})
	r.stop()
	if rec := read("managed-tgtd"); rec.TargetsKept || rec.StopTime != nil {
		t.Errorf("targets that die with the agent recorded as kept: %v", rec)
	}
}

// TestLostAndRegisteredCallbacks: OnLost runs when the lease is lost,
// before the registry registers again; OnRegistered after each
// registration (an agent with a shared store fences itself in between).
func TestLostAndRegisteredCallbacks(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	events := make(chan string, 16)
	r := start(t, cli, registry.Config{TTL: 2 * time.Second,
		OnLost: func() { events <- "lost" }, OnRegistered: func() { events <- "registered" }})
	next := func() string {
		select {
		case e := <-events:
			return e
		case <-time.After(wait):
			t.Fatalf("no callback after %v", wait)
			return ""
		}
	}
	if e := next(); e != "registered" {
		t.Fatalf("first callback %q, want registered", e)
	}
	if _, err := cli.Revoke(context.Background(), r.reg.Lease()); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != "lost" {
		t.Fatalf("after the lease was revoked: %q, want lost", e)
	}
	if e := next(); e != "registered" {
		t.Fatalf("after lost: %q, want registered again", e)
	}
}
