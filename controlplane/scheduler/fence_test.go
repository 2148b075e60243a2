package scheduler_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// A scheduler fenced by an election writes while its key holds; once the
// key is gone (another member won) it writes nothing and stops with
// kv.ErrDeposed, even though it never heard that it lost.
func TestFencedSchedulerStopsWhenDeposed(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &env{t: t, cli: cli, ctx: ctx}
	e.agent("a1", api.ReplicaReady)

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, api.ElectionPrefix)
	if err := el.Campaign(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	fence := kv.Fence{Key: el.Key(), CreateRevision: el.Rev()}
	log := cptest.Log(t)
	done := make(chan error, 1)
	go func() { done <- scheduler.New(cli, scheduler.Config{Log: log, Fence: fence}).Run(ctx) }()

	e.putNode("n1", &sanbootv1.NodeSpec{Image: image})
	e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Agent == "a1" })

	// Deposed behind its back: the key goes (as when its lease expires) and
	// a later campaign creates it again at another revision.
	if _, err := cli.Delete(ctx, fence.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, fence.Key, "m2"); err != nil {
		t.Fatal(err)
	}
	before, err := cli.Get(ctx, api.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	e.putNode("n2", &sanbootv1.NodeSpec{Image: image})
	select {
	case err := <-done:
		if !errors.Is(err, kv.ErrDeposed) {
			t.Fatalf("Run returned %v, want kv.ErrDeposed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the deposed scheduler did not stop")
	}
	if _, err := kv.Get(ctx, cli, api.PlacementKey(project, "n2"), &sanbootv1.Placement{}); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("the deposed scheduler placed n2 (get: %v)", err)
	}
	after, err := cli.Get(ctx, api.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if after.Count != before.Count+1 { // n2's node record only
		t.Fatalf("%d records after the deposed scheduler ran, want %d", after.Count, before.Count+1)
	}
}
